"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", section 3).

Each layer's attention, averaged over heads, is mixed with the identity to account for the
residual connection and renormalised (their ``A = 0.5 W_att + 0.5 I``), and the layers are
multiplied from the bottom up:

    A~_l = A_l A~_{l-1},   A~_1 = A_1,

so ``A~_L[i, j]`` is how much of input token j reaches position i at the top layer when
attention is read as a linear flow of information.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def rollout(attentions: Sequence[Tensor], *, residual: float = 0.5, start: int = 0) -> Tensor:
    """Attention rollout over layers ``start..L-1`` of one self-attention stack.

    Args:
        attentions: one ``(B, H, T, T)`` tensor per layer, bottom first (all heads and rows).
        residual: weight of the identity in each layer's mix (0.5 in the paper).
        start: first layer to include.

    Returns:
        ``(B, T, T)``: row i is the share of each input token in position i at the top.
    """
    return rollout_by_layer(attentions, residual=residual, start=start)[-1]


def rollout_by_layer(attentions: Sequence[Tensor], *, residual: float = 0.5, start: int = 0) -> list[Tensor]:
    """The rollout up to each layer: ``A~_start, A~_start+1, ..., A~_L-1`` (arguments as :func:`rollout`).

    Returns:
        One ``(B, T, T)`` tensor per layer from ``start``.
    """
    if not attentions or start >= len(attentions):
        raise ValueError(f"rollout needs at least one layer from {start}; got {len(attentions)} layers")
    if not 0.0 <= residual <= 1.0:
        raise ValueError(f"residual={residual!r} must be in [0, 1]")
    out: list[Tensor] = []
    for w in attentions[start:]:
        if w.dim() != 4 or w.shape[-1] != w.shape[-2]:
            raise ValueError(f"rollout needs square self-attention (B, H, T, T) with every row; got {tuple(w.shape)}")
        a = w.double().mean(dim=1)  # (B, T, T): heads averaged
        eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = residual * eye + (1.0 - residual) * a
        a = a / a.sum(dim=-1, keepdim=True).clamp(min=1e-12)  # rows of padding queries may be all zero
        out.append(a if not out else torch.matmul(a, out[-1]))
    return [r.to(attentions[0].dtype) for r in out]
