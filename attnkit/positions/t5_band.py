"""T5's causal bias trained inside FlexAttention: a band of per-distance values, their gradient outside the kernel.

In causal attention the bias of query i on key j depends on the distance ``m = i - j >= 0`` through its bucket
(Raffel et al. 2020, section 2.1), and every distance from ``D`` on, ``D`` the first distance of the farthest
bucket, shares that bucket's value. So one row of ``D + 1`` values per head, ``e[h, min(i - j, D)]``, is the
whole bias; a ``score_mod`` reads it from a table small enough for the kernel (:func:`band_score_mod`).

The kernel is given ``e`` without autograd: its backward pass gives q, k and v their gradients (they depend
on the bias only through the scores it recomputes) and adds nothing into ``e``, which would cost one atomic
addition per score into ``(D + 1) H`` cells. ``e``'s gradient is the sum, over the cells at each distance, of
the softmax backward ``dS_ij = P_ij (dP_ij - Delta_i)`` with ``dP_ij = dO_i . v_j`` and ``Delta_i = dO_i . O_i``
(Dao 2023, FlashAttention-2, algorithm 2). :func:`band_gradient` recomputes it on the band ``0 <= i - j < D``
alone, from q, k, v, the output and the kernel's log-sum-exp ``P_ij = exp(S_ij - lse_i)``, in blocks of ``D``
queries against the ``2D`` keys before them. The farthest value's gradient needs no far cell: each row of
``dS`` sums to zero (softmax does not change when a row's scores all move together), so the far cells of all
rows sum to minus the band's.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.positions.base import ScoreMod, repeat_kv


def band_score_mod(e: Tensor) -> ScoreMod:
    """The causal bias ``e[h, min(i - j, D)]`` as a FlexAttention ``score_mod`` (``e: (H, D + 1)``, no autograd; the
    kernel is given it in the queries' dtype)."""
    last = e.shape[-1] - 1

    def t5_band_bias(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return score + e[h, torch.clamp(q_idx - kv_idx, 0, last)]

    return t5_band_bias


def _blocks(x: Tensor, size: int, n: int) -> Tensor:
    """``(B, H, T, C)`` padded with zero rows to ``n * size`` and cut into ``(B, H, n, size, C)``."""
    return F.pad(x, (0, 0, 0, n * size - x.shape[-2])).unflatten(-2, (n, size))


def band_gradient(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, grad_out: Tensor, scale: float, e: Tensor,
                  key_keep: Tensor | None = None) -> Tensor:
    """The gradient of causal attention's loss with respect to the band values ``e: (H, D + 1)``.

    Args:
        q: ``(B, H, T, d)`` queries.
        k: ``(B, G, T, d)`` keys (G divides H).
        v: ``(B, G, T, dv)`` values.
        out: ``(B, H, T, dv)`` the attention output.
        lse: ``(B, H, T)`` the log-sum-exp of each query's biased scores (natural log).
        grad_out: ``(B, H, T, dv)`` the loss's gradient with respect to ``out``.
        scale: the factor on q k^T.
        e: the values the kernel read, ``bias(i, j) = e[h, min(i - j, D)]``.
        key_keep: ``(B, T)`` True for a real key (None: all).

    Returns:
        ``(H, D + 1)`` in float32 (float64 for float64 inputs).
    """
    h, t = q.shape[1], q.shape[-2]
    d = e.shape[-1] - 1
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    size, n = d, math.ceil(t / d)
    k, v = repeat_kv(k, h), repeat_kv(v, h)
    qb, ob, gb = (_blocks(x.to(acc), size, n) for x in (q, out, grad_out))  # (B, H, n, D, .)

    def before_and_own(x: Tensor) -> Tensor:  # block c-1 then block c of the keys (zeros before the first)
        xb = _blocks(x.to(acc), size, n)
        return torch.cat([F.pad(xb, (0, 0, 0, 0, 1, 0))[:, :, :-1], xb], dim=-2)  # (B, H, n, 2D, .)

    kb, vb = before_and_own(k), before_and_own(v)
    a = torch.arange(size, device=q.device)
    c = torch.arange(2 * size, device=q.device)
    m = size + a[:, None] - c[None, :]  # (D, 2D): i - j of query a against key c of the window
    block = torch.arange(n, device=q.device)[:, None, None]
    i, j = block * size + a[:, None], (block - 1) * size + c[None, :]  # (n, D, 2D) positions
    band = (m >= 0) & (m < d) & (j >= 0) & (i < t)  # (n, D, 2D)
    scores = qb @ kb.transpose(-1, -2) * scale + e.to(acc)[:, m.clamp(0, d - 1)][:, None]  # (B, H, n, D, 2D)
    keep = band  # (n, D, 2D)
    if key_keep is not None:  # the window's keys: j + D runs over [c D, c D + 2D) of key_keep padded by D in front
        window = F.pad(key_keep.to(acc), (size, n * size - t)).unfold(-1, 2 * size, size) > 0  # (B, n, 2D)
        keep = band & window[:, None, :, None, :]  # (B, 1, n, D, 2D)
    lse_b = F.pad(lse.to(acc), (0, n * size - t)).unflatten(-1, (n, size))  # (B, H, n, D)
    p = torch.where(keep, torch.exp(scores - lse_b[..., None]), 0.0)  # (B, H, n, D, 2D)
    delta = (gb * ob).sum(-1, keepdim=True)  # (B, H, n, D, 1)
    ds = p * (gb @ vb.transpose(-1, -2) - delta)  # (B, H, n, D, 2D)
    per_cell = ds.sum((0, 2))  # (H, D, 2D)
    grad = torch.zeros(h, d + 1, dtype=acc, device=q.device)
    grad[:, :d].index_add_(1, m.clamp(0, d - 1).flatten(), per_cell.flatten(1))  # cells off the band hold 0
    grad[:, d] = -grad[:, :d].sum(-1)  # each row of dS sums to zero
    return grad


_COMPILED: list[Any] = []


@contextmanager
def _tf32(on: bool) -> Iterator[None]:
    """TF32 matrix products while ``on``: exact here, since bf16 and fp16 values fit TF32's 10-bit mantissa and the
    products accumulate in fp32. The setting is read and restored through ``fp32_precision`` where PyTorch has it:
    its legacy ``allow_tf32`` raises on reading once a program has set the precision through the new settings."""
    matmul = torch.backends.cuda.matmul
    try:
        old: Any = matmul.fp32_precision  # PyTorch >= 2.9
        name, value = "fp32_precision", "tf32"
    except AttributeError:  # pragma: no cover - old PyTorch
        old, name, value = matmul.allow_tf32, "allow_tf32", True
    if not on or old == value:
        yield
        return
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, old)


def _band_gradient_for(device: torch.device) -> Any:
    """:func:`band_gradient`, compiled once on CUDA (its elementwise steps fuse), eager elsewhere."""
    if device.type != "cuda":
        return band_gradient
    if not _COMPILED:
        _COMPILED.append(torch.compile(band_gradient, dynamic=False))
    return _COMPILED[0]


class _BandGrad(torch.autograd.Function):
    """The identity on the kernel's output whose backward also returns ``e``'s gradient (:func:`band_gradient`)."""

    @staticmethod
    def forward(ctx: Any, out: Tensor, e: Tensor, q: Tensor, k: Tensor, v: Tensor, lse: Tensor, scale: float,  # type: ignore[override]
                key_keep: Tensor | None) -> Tensor:
        ctx.scale, ctx.e_dtype = scale, e.dtype
        ctx.save_for_backward(q, k, v, out, lse, e.detach().to(q.dtype), key_keep)  # the values the kernel read
        return out.view_as(out)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        q, k, v, out, lse, e, key_keep = ctx.saved_tensors
        grad_e = None
        if ctx.needs_input_grad[1]:
            with _tf32(q.is_cuda and q.dtype in (torch.bfloat16, torch.float16) and grad_out.dtype == q.dtype):
                grad_e = _band_gradient_for(q.device)(q, k, v, out, lse, grad_out, ctx.scale, e, key_keep)
        return grad_out, None if grad_e is None else grad_e.to(ctx.e_dtype), None, None, None, None, None, None


def with_band_gradient(out: Tensor, lse: Tensor, e: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: float,
                       key_keep: Tensor | None = None) -> Tensor:
    """``out`` (from a kernel that read ``e`` without autograd) joined to ``e``'s graph: its backward adds
    :func:`band_gradient` to ``e``'s gradient. The other arguments are the kernel's inputs and log-sum-exp."""
    return _BandGrad.apply(out, e, q.detach(), k.detach(), v.detach(), lse.detach(), scale, key_keep)
