"""Attention probabilities of chosen heads and query rows, recomputed from a kernel's inputs.

A kernel's fast path (SDPA, FlexAttention, the chunked sparse path, LSH's sorted chunks,
routing's clusters) returns only the mixed values. The weights that produced them are a
function of what the kernel was given (``q``, ``k``, the boolean ``mask``, the score ``bias``,
``causal``) and of the kernel's own visibility rule. :func:`probabilities` recomputes that
function for the rows and heads asked for, never the whole ``(Tq, Tk)`` matrix of every head:

* softmax kernels (``scaled_dot``, ``dot``, ``additive``) and the other score/normalise kernels
  (``relu``, ``linear``, ``performer``): the kernel's own ``scores`` of the chosen query rows
  against every key, plus the bias rows, normalised by the kernel's ``normalize`` over the
  visible keys (the user's mask AND the bottom-right aligned causal mask, rows sliced);
* the sparse patterns (:mod:`attnkit.attention.sparse`): the same, with the rows of the
  pattern's predicate (:mod:`attnkit.attention.patterns`) ANDed in, built for those rows only;
* ``lsh`` (Kitaev et al. 2020, section 2 and appendix): per round, the keys in the query's
  bucket in its own or the previous sorted chunk, without itself unless nothing else is
  visible; the rounds' softmaxes mixed by ``softmax_r(lse_r)``;
* ``routing`` (Roy et al. 2021, section 4.1): the keys routed to the query's cluster;
* ``linformer`` (Wang et al. 2020, eq. (7)): the effective matrix ``softmax(Q (E K)^T / sqrt(d)) F``
  whose product with V is the output (its entries may be negative).

For every kernel the rows returned are the matrix ``W`` with ``out[rows] = W V``; the tests check
this against each kernel's fast-path output and the softmax kernels against a naive masked softmax.
A kernel this module does not know is asked for its dense reference weights, then sliced.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.base import AttentionKernel
from attnkit.attention.linear import LinearAttention
from attnkit.attention.linformer import LinformerAttention
from attnkit.attention.lsh import LSHAttention, _round_weights, _softmax_lse
from attnkit.attention.routing import RoutingAttention
from attnkit.attention.sparse import SparseAttention

Index = Sequence[int] | Tensor | None


def _index(sel: Index, n: int, device: torch.device) -> Tensor:
    """``sel`` as a long tensor of positions in ``0..n-1`` (all of them when ``None``)."""
    if sel is None:
        return torch.arange(n, device=device)
    idx = torch.as_tensor(sel, dtype=torch.long, device=device).flatten()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"index {idx.tolist()} is outside 0..{n - 1}")
    return idx


def _select(x: Tensor | None, heads: Tensor, rows: Tensor) -> Tensor | None:
    """Heads and query rows of a tensor broadcastable to ``(B, H, Tq, Tk)`` (size-1 axes kept)."""
    if x is None:
        return None
    x = x.reshape((1,) * (4 - x.dim()) + tuple(x.shape))
    if x.shape[1] > 1:
        x = x[:, heads]
    if x.shape[2] > 1:
        x = x[:, :, rows]
    return x


def _causal_rows(rows: Tensor, tq: int, tk: int) -> Tensor:
    """``(R, Tk)``: the causal mask's rows, bottom-right aligned (query row r sits at ``Tk - Tq + r``)."""
    return torch.arange(tk, device=rows.device)[None, :] <= (rows + (tk - tq))[:, None]


def _and(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return b if b is None else a & b


def _expand_kv(k: Tensor, n_heads: int) -> Tensor:
    """Keys shared by groups of query heads (grouped-query attention) repeated to one per query head."""
    if k.shape[1] == n_heads:
        return k
    if n_heads % k.shape[1]:
        raise ValueError(f"{k.shape[1]} key heads cannot serve {n_heads} query heads")
    return k.repeat_interleave(n_heads // k.shape[1], dim=1)


@torch.no_grad()
def probabilities(
    kernel: nn.Module,
    q: Tensor,
    k: Tensor,
    *,
    mask: Tensor | None = None,
    bias: Tensor | None = None,
    causal: bool = False,
    heads: Index = None,
    rows: Index = None,
) -> Tensor:
    """The attention weights ``(B, len(heads), len(rows), Tk)`` a kernel applied to ``q``, ``k``.

    Args:
        kernel: the registered kernel that was called.
        q: ``(B, H, Tq, D)`` queries it was given.
        k: ``(B, H or H_kv, Tk, D)`` keys it was given.
        mask: its boolean mask (True = may attend), broadcastable to ``(B, H, Tq, Tk)``.
        bias: its float score bias, broadcastable to ``(B, H, Tq, Tk)``.
        causal: whether it was called causal (bottom-right aligned).
        heads: the heads wanted (default all).
        rows: the query rows wanted (default all).

    Returns:
        Float32 (float64 for float64 inputs) weights with ``out[:, heads, rows] = W @ v[:, heads]``;
        rows that see no key are zeros.
    """
    tq, tk = q.shape[-2], k.shape[-2]
    h_idx, r_idx = _index(heads, q.shape[1], q.device), _index(rows, tq, q.device)
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    k = _expand_kv(k, q.shape[1])
    if isinstance(kernel, LSHAttention):
        return _lsh(kernel, q.to(dtype), k.to(dtype), mask, bias, causal, h_idx, r_idx)
    if isinstance(kernel, LinformerAttention):  # rows are independent; its E and F are shared by the heads
        return kernel.weights(q[:, h_idx][:, :, r_idx].to(dtype), k[:, h_idx].to(dtype), mask=mask, bias=bias, causal=causal).to(dtype)
    if not isinstance(kernel, AttentionKernel):
        raise TypeError(f"{type(kernel).__name__} is not an attention kernel")
    known = isinstance(kernel, (SparseAttention, RoutingAttention, LinearAttention)) or type(kernel).weights is AttentionKernel.weights
    if not known:  # a kernel with its own weights rule: its dense reference, sliced
        w = kernel.weights(q.to(dtype), k.to(dtype), mask=mask, bias=bias, causal=causal)
        return w[:, h_idx][:, :, r_idx].to(dtype)
    qs, ks = q[:, h_idx][:, :, r_idx], k[:, h_idx]  # (B, h, R, D), (B, h, Tk, D)
    allowed = _select(mask, h_idx, r_idx)
    if causal:
        allowed = _and(allowed, _causal_rows(r_idx, tq, tk))
    if isinstance(kernel, SparseAttention):
        pattern = kernel.pattern(causal)
        kernel._check_heads(pattern, q.shape[1])
        keep = pattern.mask_fn(tq, tk, q.device)
        hh = h_idx[:, None, None] if pattern.per_head else torch.zeros((), dtype=torch.long, device=q.device)
        allowed = _and(allowed, keep(hh, r_idx[:, None], torch.arange(tk, device=q.device)[None, :]))
    if isinstance(kernel, RoutingAttention):
        cq = kernel.clusters(q[:, :, r_idx])[:, h_idx]  # (B, h, R): routed as the kernel routes, without its update
        ck = kernel.clusters(k)[:, h_idx]  # (B, h, Tk)
        allowed = _and(allowed, cq[..., :, None] == ck[..., None, :])
    s = kernel.scores(qs.to(dtype), ks.to(dtype))  # (B, h, R, Tk)
    b = _select(bias, h_idx, r_idx)
    if b is not None:
        if isinstance(kernel, LinearAttention):
            raise ValueError("linear attention takes no score bias (it has no softmax to add it to)")
        s = s + b.to(dtype)
    if allowed is not None:
        allowed = allowed.expand_as(s)
    return kernel.normalize(s, allowed).to(dtype)


def _lsh(kernel: LSHAttention, q: Tensor, k: Tensor, mask: Tensor | None, bias: Tensor | None, causal: bool,
         heads: Tensor, rows: Tensor) -> Tensor:
    """Reformer's multi-round LSH weights for the chosen rows: buckets and sorted chunks from every key."""
    t = k.shape[-2]
    qs, ks = q[:, heads][:, :, rows], k[:, heads]
    bk = kernel.buckets(k)[:, :, heads]  # (R, B, h, T): rotations are shared by the heads
    pos = torch.arange(t, device=k.device)
    chunk = torch.argsort(bk * t + pos, dim=-1).argsort(dim=-1) // kernel.chunk  # sorted chunk of each position
    rb, rc = bk[..., rows], chunk[..., rows]  # (R, B, h, Rq)
    vis = (rb[..., :, None] == bk[..., None, :]) & ((rc[..., :, None] == chunk[..., None, :]) | (rc[..., :, None] - 1 == chunk[..., None, :]))
    if causal:
        vis = vis & (pos[None, :] <= rows[:, None])
    m = _select(mask, heads, rows)
    if m is not None:
        vis = vis & m
    s = torch.matmul(qs, F.normalize(ks, dim=-1).transpose(-2, -1)) * kernel._scale(q.shape[-1])  # (B, h, Rq, T)
    b = _select(bias, heads, rows)
    if b is not None:
        s = s + b.to(s.dtype)
    others = vis & (pos[None, :] != rows[:, None])
    vis = torch.where(others.any(-1, keepdim=True), others, vis)  # itself only if nothing else is visible
    w, lse = _softmax_lse(s.expand_as(vis), vis)  # (R, B, h, Rq, T), (R, B, h, Rq, 1)
    return (w * _round_weights(lse)).sum(0)

