"""The kernel protocol and the dense reference path every kernel can fall back to.

Every kernel is called as ``kernel(q, k, v, *, mask=None, bias=None, causal=False,
need_weights=False)`` with ``q: (B, H, Tq, D)``, ``k: (B, H, Tk, D)``, ``v: (B, H, Tk, Dv)``
and returns ``(B, H, Tq, Dv)`` (and the ``(B, H, Tq, Tk)`` weights when ``need_weights``).

* ``mask``: boolean, broadcastable to ``(B, H, Tq, Tk)``, True = may attend.
* ``bias``: float, broadcastable to ``(B, H, Tq, Tk)``, added to the scores before
  normalisation (relative-position or ALiBi biases).
* Rows whose keys are all masked give zero output and zero weights, never NaN.

Subclasses define :meth:`scores` (and may override :meth:`normalize` and :meth:`fast`).

Grouped-query attention (Ainslie et al. 2023) passes ``k, v`` with fewer heads ``G`` than ``q``
(``H`` a multiple of ``G``): query head ``h`` reads key/value head ``h // (H / G)``. Kernels see
them repeated to ``H`` heads (:func:`repeat_kv`) unless they declare ``grouped_kv`` and handle
the groups in :meth:`fast` themselves.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.attention.masks import combine


def masked_softmax(scores: Tensor, allowed: Tensor | None) -> Tensor:
    """Softmax over the last axis restricted to ``allowed``; fully masked rows become zeros.

    Computed in float32 for half-precision inputs, returned in the input dtype.
    """
    dtype = scores.dtype
    s = scores.float() if dtype in (torch.float16, torch.bfloat16) else scores  # keep float64 as float64
    if allowed is None:
        return torch.softmax(s, dim=-1).to(dtype)
    s = s.masked_fill(~allowed, torch.finfo(s.dtype).min)
    w = torch.softmax(s, dim=-1) * allowed  # fully masked rows: uniform * 0 = 0
    return w.to(dtype)


def repeat_kv(x: Tensor, n_heads: int) -> Tensor:
    """``x: (B, G, T, D)`` with each head repeated for its ``n_heads / G`` query heads: ``(B, n_heads, T, D)``."""
    b, g, t, d = x.shape
    if g == n_heads:
        return x
    return x[:, :, None].expand(b, g, n_heads // g, t, d).reshape(b, n_heads, t, d)


class AttentionKernel(nn.Module):
    """Base class for the score-and-mix step of attention (Vaswani et al. 2017, section 3.2)."""

    kind: str = "base"
    # True where :meth:`fast` adds a float ``bias`` as it is: a caller that knows no row is empty
    # may then pass a 0 / -inf bias built once instead of a boolean mask checked for empty rows.
    bias_as_mask: bool = False
    # True where :meth:`fast` takes keys/values with fewer heads than the queries (grouped-query attention).
    grouped_kv: bool = False

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout!r} must be in [0, 1)")
        self.dropout = dropout

    # -- to override ---------------------------------------------------------------
    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        """Compatibility scores ``(B, H, Tq, Tk)``."""
        raise NotImplementedError

    def normalize(self, scores: Tensor, allowed: Tensor | None) -> Tensor:
        """Turn scores into weights; default is the masked softmax."""
        return masked_softmax(scores, allowed)

    def fast(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None, causal: bool
    ) -> Tensor | None:
        """An optimised path returning the output only, or ``None`` to use the reference path."""
        return None

    # -- the shared call -------------------------------------------------------------
    def weights(
        self, q: Tensor, k: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None, causal: bool = False
    ) -> Tensor:
        """Dense attention weights ``(B, H, Tq, Tk)`` computed by the reference path."""
        s = self.scores(q, k)  # (B, H, Tq, Tk)
        if bias is not None:
            s = s + bias
        allowed = combine(mask, causal, q.shape[-2], k.shape[-2], q.device)
        if allowed is not None:
            allowed = allowed.expand_as(s)
        return self.normalize(s, allowed)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be boolean (True = may attend), got {mask.dtype}")
        h = q.shape[-3]
        if k.shape[-3] != h and (need_weights or not self.grouped_kv):
            k, v = repeat_kv(k, h), repeat_kv(v, h)  # (B, H, Tk, D)
        if not need_weights:
            out = self.fast(q, k, v, mask, bias, causal)
            if out is not None:
                return out
        k, v = repeat_kv(k, h), repeat_kv(v, h)  # a grouped_kv kernel whose fast path declined
        w = self.weights(q, k, mask=mask, bias=bias, causal=causal)  # (B, H, Tq, Tk)
        p = nn.functional.dropout(w, self.dropout, self.training) if self.dropout else w
        out = torch.matmul(p.to(v.dtype), v)  # (B, H, Tq, Dv)
        return (out, w) if need_weights else out

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}"
