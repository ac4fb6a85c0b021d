"""Softmax-free ReLU attention.

Weights are ReLU(q . k / sqrt(d_k)) divided by the number of keys a query may see,
instead of a softmax (the "replace softmax with ReLU" idea; cf. Wortsman et al. 2023,
"Replacing softmax with ReLU in Vision Transformers", which divides by the sequence
length). Rows with no visible key are zero.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnkit.attention.base import AttentionKernel
from attnkit.attention.registry import register


@register("relu")
class ReLUAttention(AttentionKernel):
    """ReLU(QK^T / sqrt(d_k)) / n_visible_keys, then multiplied with V."""

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)

    def normalize(self, scores: Tensor, allowed: Tensor | None) -> Tensor:
        w = torch.relu(scores)
        if allowed is None:
            return w / scores.shape[-1]
        count = allowed.sum(dim=-1, keepdim=True).clamp(min=1).to(w.dtype)  # (..., Tq, 1)
        return w * allowed / count
