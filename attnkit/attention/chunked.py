"""Chunked exact softmax attention over gathered keys: the CPU fast path of the sparse patterns.

A *plan* splits the query rows into groups, and names for each group the key rows that can
be visible to it (a band around the chunk, the global positions, a residue class...). Each
group is one small dense attention ``(C, K)`` with the pattern's predicate as its mask, so
memory is the sum of ``C * K`` over groups (O(n * w) for windows), never ``Tq x Tk``.

A pattern may need several *parts* whose visible sets are disjoint (the strided pattern's
band and its residue class); their partial results are merged with the running-max rule of
online softmax (Milakov & Gimelshein 2018): ``acc = sum_j exp(s_j - m) v_j``,
``z = sum_j exp(s_j - m)``, ``out = acc / z``. Rows that see no key get ``z = 0`` and a zero
output with zero gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.attention.patterns import KeepFn


@dataclass
class Part:
    """Groups of ``(query rows, key rows)``; the query rows of all groups partition ``0..Tq-1``."""

    keep: KeepFn
    groups: list[tuple[Tensor, Tensor]]
    heads: Tensor | None = None  # the heads this part is for (per-head patterns); None = all
    stacked: list[tuple[Tensor, Tensor]] = field(default_factory=list)  # groups of one shape stacked, built once

    def buckets(self) -> list[tuple[Tensor, Tensor]]:
        """The groups stacked by shape: ``[(query rows (G, C), key rows (G, K)), ...]``."""
        if not self.stacked:
            shapes: dict[tuple[int, int], list[tuple[Tensor, Tensor]]] = {}
            for qr, kr in self.groups:
                shapes.setdefault((qr.numel(), kr.numel()), []).append((qr, kr))
            self.stacked = [(torch.stack([q for q, _ in g]), torch.stack([k for _, k in g])) for g in shapes.values()]
        return self.stacked


def _take(t: Tensor, qi: Tensor, ki: Tensor, heads: Tensor | None) -> Tensor:
    """``t[..., qi[:, :, None], ki[:, None, :]]`` for ``t`` broadcastable to ``(B, H, Tq, Tk)``:
    ``(..., G, C, K)`` for stacked query rows ``qi: (G, C)`` and key rows ``ki: (G, K)``."""
    while t.dim() < 4:
        t = t.unsqueeze(0)
    if heads is not None and t.shape[1] > 1:
        t = t.index_select(1, heads)
    qsel = qi[:, :, None] if t.shape[-2] > 1 else torch.zeros_like(qi[:, :1, None])
    ksel = ki[:, None, :] if t.shape[-1] > 1 else torch.zeros_like(ki[:, None, :1])
    return t[:, :, qsel, ksel]  # (B|1, H|1, G, C|1, K|1)


def _bucket(
    q: Tensor, k: Tensor, v: Tensor, qi: Tensor, ki: Tensor, keep: KeepFn, h: Tensor,
    mask: Tensor | None, bias: Tensor | None, heads: Tensor | None, scale: float, dropout_p: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(acc, z, m)`` for ``G`` groups of equal shape at once: query rows ``qi: (G, C)``, key rows
    ``ki: (G, K)``; returns ``(B, H, G*C, Dv)``, ``(B, H, G*C, 1)``, ``(B, H, G*C, 1)``."""
    ctype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    (b, n_h, _, d), dv = q.shape, v.shape[-1]
    g, c = qi.shape
    n_k = ki.shape[1]
    if n_k == 0:
        z = q.new_zeros(b, n_h, g * c, 1, dtype=ctype)
        return q.new_zeros(b, n_h, g * c, dv, dtype=ctype), z, torch.full_like(z, float("-inf"))
    qs = q.index_select(2, qi.flatten()).view(b, n_h, g, c, d)  # (B, H, G, C, D)
    ks = k.index_select(2, ki.flatten()).view(b, n_h, g, n_k, d)  # (B, H, G, K, D)
    vs = v.index_select(2, ki.flatten()).view(b, n_h, g, n_k, dv)
    s = torch.matmul(qs, ks.transpose(-2, -1)).to(ctype) * scale  # (B, H, G, C, K)
    if bias is not None:
        s = s + _take(bias, qi, ki, heads).to(ctype)
    allowed = keep(h[..., None], qi[:, :, None], ki[:, None, :])  # (G, C, K) or (H, G, C, K)
    if mask is not None:
        allowed = allowed & _take(mask, qi, ki, heads)
    s = s.masked_fill(~allowed, float("-inf"))
    m = s.detach().amax(dim=-1, keepdim=True)  # (B, H, G, C, 1); -inf where the row sees nothing
    e = torch.exp(s - _finite(m))  # masked entries: exp(-inf) = 0
    z = e.sum(dim=-1, keepdim=True)
    if dropout_p:
        e = F.dropout(e, dropout_p, training=True)
    acc = torch.matmul(e, vs.to(ctype))  # (B, H, G, C, Dv)
    return acc.reshape(b, n_h, g * c, dv), z.reshape(b, n_h, g * c, 1), m.reshape(b, n_h, g * c, 1)


def _run_part(
    part: Part, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None, scale: float, dropout_p: float
) -> tuple[Tensor, Tensor, Tensor]:
    heads = part.heads
    if heads is not None:
        q, k, v = q.index_select(1, heads), k.index_select(1, heads), v.index_select(1, heads)
        h = heads[:, None, None]
    else:
        h = torch.zeros((), dtype=torch.long, device=q.device)
    outs, order = [], []
    for qi, ki in part.buckets():  # groups of the same shape run as one batched product
        outs.append(_bucket(q, k, v, qi, ki, part.keep, h, mask, bias, heads, scale, dropout_p))
        order.append(qi.flatten())
    rows = torch.cat(order)
    inverse = torch.empty_like(rows)
    inverse[rows] = torch.arange(rows.numel(), device=rows.device)
    return tuple(torch.cat([o[i] for o in outs], dim=2).index_select(2, inverse) for i in range(3))  # type: ignore[return-value]


def attend(
    q: Tensor, k: Tensor, v: Tensor, parts: list[Part], *, mask: Tensor | None, bias: Tensor | None, scale: float, dropout_p: float = 0.0
) -> Tensor:
    """Exact softmax attention restricted to the union of ``parts`` (and ``mask``), ``(B, H, Tq, Dv)``.

    Parts that carry ``heads`` cover those heads only; the heads of such parts must partition
    ``0..H-1``. Parts without ``heads`` cover all heads and are merged by online softmax.
    """
    per_head = [p for p in parts if p.heads is not None]
    if per_head:
        outs = [_finish(*_run_part(p, q, k, v, mask, bias, scale, dropout_p)) for p in per_head]
        order = torch.cat([p.heads for p in per_head])  # type: ignore[misc]
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return torch.cat(outs, dim=1).index_select(1, inverse).to(v.dtype)
    acc, z, m = _run_part(parts[0], q, k, v, mask, bias, scale, dropout_p)
    for p in parts[1:]:
        acc2, z2, m2 = _run_part(p, q, k, v, mask, bias, scale, dropout_p)
        m_new = torch.maximum(m, m2)
        a, b = torch.exp(m - _finite(m_new)), torch.exp(m2 - _finite(m_new))
        acc, z, m = acc * a + acc2 * b, z * a + z2 * b, m_new
    return _finish(acc, z, m).to(v.dtype)


def _finite(m: Tensor) -> Tensor:
    return torch.where(torch.isfinite(m), m, torch.zeros_like(m))


def _finish(acc: Tensor, z: Tensor, m: Tensor) -> Tensor:
    return acc / torch.where(z > 0, z, torch.ones_like(z))
