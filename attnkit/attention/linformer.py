"""Linformer attention (Wang et al. 2020, "Linformer: Self-Attention with Linear Complexity", eq. (7)).

    head = softmax(Q (E K)^T / sqrt(d_k)) (F V),   E, F: (k, n) learned projections along the sequence,

so the score matrix is ``(n, k)`` instead of ``(n, n)``. One E and one F for all heads (the
paper's "headwise sharing", section 4). Sequences shorter than ``max_len`` use the first T
columns of E and F, which is the same as zero-padding them to ``max_len``.

Masks: a key-padding mask ``(B, 1, 1, Tk)`` zeroes the padded keys and values before the
projection (they then add nothing to E K or F V); any other mask, a score bias and
``causal=True`` cannot be expressed after the projection mixes positions, and raise
``ValueError``. ``need_weights`` returns the effective ``(B, H, Tq, Tk)`` matrix
``softmax(Q (E K)^T / sqrt(d)) F``, which gives the output when multiplied with V; unlike
softmax weights its entries may be negative.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnkit.attention.base import AttentionKernel
from attnkit.attention.registry import register


@register("linformer")
class LinformerAttention(AttentionKernel):
    """softmax(Q (E K)^T / sqrt(d)) (F V) with learned ``E, F: (k, max_len)``.

    Args:
        max_len: the longest sequence (n).
        k: projected length.
        dropout: dropout on the ``(Tq, k)`` attention weights (training only).
    """

    def __init__(self, max_len: int = 4096, k: int = 256, dropout: float = 0.0) -> None:
        super().__init__(dropout)
        for name, value in (("max_len", max_len), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        self.max_len, self.k = max_len, k
        # The paper initialises E, F as N(0, 1/k) (its appendix); scaled so E K keeps the scale of K.
        self.e = nn.Parameter(torch.randn(k, max_len) / math.sqrt(k))
        self.f = nn.Parameter(torch.randn(k, max_len) / math.sqrt(k))

    def _check(self, k: Tensor, mask: Tensor | None, bias: Tensor | None, causal: bool) -> Tensor | None:
        """Validate the call; return the ``(B|1, 1, Tk, 1)`` key-keep factor of a padding mask."""
        if causal:
            raise ValueError("linformer cannot be causal: its projections mix every position into each projected key")
        if bias is not None:
            raise ValueError("linformer takes no score bias: its scores are over projected keys, not positions")
        if k.shape[-2] > self.max_len:
            raise ValueError(f"linformer was built for max_len={self.max_len}; got a sequence of {k.shape[-2]} keys")
        if mask is None:
            return None
        if not (mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1):
            raise ValueError(f"linformer takes only key-padding masks of shape (B, 1, 1, Tk); got {tuple(mask.shape)}")
        return mask[:, :, 0, :, None].to(k.dtype)  # (B|1, 1, Tk, 1)

    def _project(self, x: Tensor, proj: Tensor, keep: Tensor | None) -> Tensor:
        """``proj[:, :T] x`` over the sequence axis: ``(B, H, T, D) -> (B, H, k, D)``, padded positions zeroed first."""
        if keep is not None:
            x = x * keep
        return torch.matmul(proj[:, : x.shape[-2]].to(x.dtype), x)

    def _probs(self, q: Tensor, ek: Tensor) -> Tensor:
        s = torch.matmul(q, ek.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, k)
        p = torch.softmax(s.float() if s.dtype in (torch.float16, torch.bfloat16) else s, dim=-1).to(q.dtype)
        return nn.functional.dropout(p, self.dropout, self.training) if self.dropout else p

    def fast(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None, causal: bool) -> Tensor | None:
        keep = self._check(k, mask, bias, causal)
        ek, fv = self._project(k, self.e, keep), self._project(v, self.f, keep)  # (B, H, k, D), (B, H, k, Dv)
        return torch.matmul(self._probs(q, ek), fv)  # (B, H, Tq, Dv)

    def weights(self, q: Tensor, k: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None, causal: bool = False) -> Tensor:
        keep = self._check(k, mask, bias, causal)
        f = self.f[:, : k.shape[-2]].to(q.dtype)  # (k, Tk)
        w = torch.matmul(self._probs(q, self._project(k, self.e, keep)), f)  # (B, H, Tq, Tk): out = w V
        return w if keep is None else w * keep.transpose(-2, -1)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                causal: bool = False, need_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be boolean (True = may attend), got {mask.dtype}")
        out = self.fast(q, k, v, mask, bias, causal)
        if not need_weights:
            return out
        return out, self.weights(q, k, mask=mask, bias=bias, causal=causal)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, k={self.k}, dropout={self.dropout}"
