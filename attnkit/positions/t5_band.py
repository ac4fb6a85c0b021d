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
alone, from q, k, v, the output and the kernel's log-sum-exp ``P_ij = exp(S_ij - lse_i)``, in blocks of
``S >= D`` queries against their own block of keys and the block before. The farthest value's gradient needs no far
cell: each row of ``dS`` sums to zero (softmax does not change when a row's scores all move together), so the
far cells of all rows sum to minus the band's.
"""

from __future__ import annotations

import math
from typing import Any

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


_BMM_TO_FLOAT32 = hasattr(torch.ops.aten.bmm, "dtype")  # torch.bmm(..., out_dtype=): half-precision in, float32 out


def _products(x: Tensor, y: Tensor, acc: torch.dtype) -> Tensor:
    """``x @ y^T`` over the last two dimensions in ``acc``. Half-precision inputs on CUDA multiply as they are, with a
    float32 accumulator and result (the products the kernel formed); elsewhere the inputs are converted first."""
    if x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and _BMM_TO_FLOAT32 and acc == torch.float32:
        got = torch.bmm(x.flatten(0, -3), y.flatten(0, -3).transpose(-1, -2), out_dtype=torch.float32)
        return got.view(*x.shape[:-1], y.shape[-2])
    return x.to(acc) @ y.to(acc).transpose(-1, -2)


def band_gradient(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, grad_out: Tensor, scale: float, e: Tensor,
                  key_keep: Tensor | None = None) -> Tensor:
    """The gradient of causal attention's loss with respect to the band values ``e: (H, D + 1)``.

    The queries are cut into blocks of ``S >= D`` (a multiple of 16), so the band of a block's queries lies in the
    same block of keys and the one before: two products of ``S x S`` tiles per block, each for q k^T and dO v^T.

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
    grad = torch.zeros(h, d + 1, dtype=acc, device=q.device)
    if d == 0:  # one value for every distance: softmax ignores it
        return grad
    size = -(-d // 16) * 16
    n = math.ceil(t / size)
    k, v = repeat_kv(k, h), repeat_kv(v, h)
    qb, kb, vb, gb = (_blocks(x, size, n) for x in (q, k, v, grad_out))  # (B, H, n, S, .)
    lse_b = F.pad(lse.to(acc), (0, n * size - t)).unflatten(-1, (n, size))  # (B, H, n, S)
    delta = F.pad((grad_out.to(acc) * out.to(acc)).sum(-1), (0, n * size - t)).unflatten(-1, (n, size))  # (B, H, n, S)
    query_real = (torch.arange(n * size, device=q.device) < t).view(n, size, 1)  # padding queries: no cell
    keys_b = None if key_keep is None else F.pad(key_keep.to(torch.uint8), (0, n * size - t)).bool().view(-1, 1, n, 1, size)
    a = torch.arange(size, device=q.device)
    e = e.to(acc)

    def cells(q_: Tensor, k_: Tensor, v_: Tensor, g_: Tensor, rows: slice, m: Tensor, keep: Tensor) -> Tensor:
        """The sum over batches and blocks of dS on the tiles of ``rows`` (query blocks) against keys ``k_, v_``:
        ``(H, S, S)``, zero off the band (``m``: i - j of each cell, ``keep``: (blocks, S, S) cells on the band)."""
        scores = _products(q_, k_, acc) * scale + e[:, m.clamp(0, d - 1)][:, None]  # (B, H, blocks, S, S)
        p = torch.where(keep, torch.exp(scores - lse_b[:, :, rows, :, None]), 0.0)
        return (p * (_products(g_, v_, acc) - delta[:, :, rows, :, None])).sum((0, 2))

    own = a[:, None] - a[None, :]  # (S, S): i - j of query a and key c of the same block
    keep_own = (own >= 0) & (own < d) & query_real
    if keys_b is not None:
        keep_own = keep_own & keys_b  # (B, 1, n, S, S)
    grad[:, :d].index_add_(1, own.clamp(0, d - 1).flatten(), cells(qb, kb, vb, gb, slice(None), own, keep_own).flatten(1))
    if n > 1:  # each block's queries against the block of keys before
        before = own + size
        keep_before = (before < d) & query_real[1:]
        if keys_b is not None:
            keep_before = keep_before & keys_b[:, :, :-1]
        got = cells(qb[:, :, 1:], kb[:, :, :-1], vb[:, :, :-1], gb[:, :, 1:], slice(1, None), before, keep_before)
        grad[:, :d].index_add_(1, before.clamp(0, d - 1).flatten(), got.flatten(1))
    grad[:, d] = -grad[:, :d].sum(-1)  # each row of dS sums to zero
    return grad


_COMPILED: list[Any] = []


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
            grad_e = _band_gradient_for(q.device)(q, k, v, out, lse, grad_out, ctx.scale, e, key_keep)
        return grad_out, None if grad_e is None else grad_e.to(ctx.e_dtype), None, None, None, None, None, None


def with_band_gradient(out: Tensor, lse: Tensor, e: Tensor, q: Tensor, k: Tensor, v: Tensor, scale: float,
                       key_keep: Tensor | None = None) -> Tensor:
    """``out`` (from a kernel that read ``e`` without autograd) joined to ``e``'s graph: its backward adds
    :func:`band_gradient` to ``e``'s gradient. The other arguments are the kernel's inputs and log-sum-exp."""
    return _BandGrad.apply(out, e, q.detach(), k.detach(), v.detach(), lse.detach(), scale, key_keep)
