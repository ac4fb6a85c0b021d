"""Additive attention (Bahdanau, Cho & Bengio 2015, eq. (6) / appendix A.1.2).

    score(q, k) = v^T tanh(W_q q + W_k k)

The Transformer paper (section 3.2.1) compares it with dot-product attention: similar
in theory, but slower and heavier because it cannot use one matrix multiplication.
This kernel has its own parameters (shared across heads), allows ``Tq != Tk``, and
evaluates the ``(Tq, Tk, d_attn)`` tanh in query chunks to bound memory.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.attention.base import AttentionKernel
from attnkit.attention.registry import register


@register("additive")
class Additive(AttentionKernel):
    """v^T tanh(W_q q + W_k k) scores followed by the masked softmax."""

    def __init__(self, head_dim: int, attn_dim: int | None = None, dropout: float = 0.0, chunk_elements: int = 1 << 24) -> None:
        super().__init__(dropout)
        if head_dim <= 0:
            raise ValueError(f"head_dim={head_dim!r} must be positive")
        attn_dim = attn_dim or head_dim
        self.w_q = nn.Linear(head_dim, attn_dim, bias=False)
        self.w_k = nn.Linear(head_dim, attn_dim, bias=True)
        self.v = nn.Linear(attn_dim, 1, bias=False)
        self.chunk_elements = chunk_elements

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        qa = self.w_q(q)  # (B, H, Tq, A)
        ka = self.w_k(k)  # (B, H, Tk, A)
        b, h, tq, a = qa.shape
        tk = ka.shape[-2]
        step = max(1, self.chunk_elements // max(1, b * h * tk * a))
        rows = []
        for i in range(0, tq, step):
            e = torch.tanh(qa[:, :, i : i + step, None, :] + ka[:, :, None, :, :])  # (B, H, c, Tk, A)
            rows.append(self.v(e).squeeze(-1))  # (B, H, c, Tk)
        return torch.cat(rows, dim=-2)  # (B, H, Tq, Tk)
