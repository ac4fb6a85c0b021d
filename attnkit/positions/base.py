"""What every score-bias position provides: a dense bias for the reference and chunked paths, and
optionally a FlexAttention ``score_mod`` for the GPU path.

Positions are in the keys' frame: key ``j`` sits at position ``j`` of the keys the kernel sees, and
query ``i`` at ``q_pos[i]`` (``Tk - Tq + i`` for a growing KV cache, the cache slot for a static one).
The bias enters the scores after the kernel's scale: ``softmax(scale * q k^T + bias)``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]  # (score, b, h, q_idx, kv_idx) -> score


def distances(q_pos: Tensor, tk: int) -> Tensor:
    """Relative positions ``i - j``: ``(Tq, Tk)`` for ``q_pos: (Tq,)``, ``(B, Tq, Tk)`` for ``(B, Tq)``."""
    return q_pos[..., :, None] - torch.arange(tk, device=q_pos.device)  # (..., Tq, Tk)


def repeat_kv(k: Tensor, n_heads: int) -> Tensor:
    """Keys ``(B, G, T, D)`` of grouped-query attention repeated to ``(B, H, T, D)``."""
    g = k.shape[1]
    return k if g == n_heads else k.repeat_interleave(n_heads // g, dim=1)


def as_heads(bias: Tensor) -> Tensor:
    """A ``(H, Tq, Tk)`` or ``(B, H, Tq, Tk)`` bias as 4-D."""
    return bias if bias.dim() == 4 else bias[None]


class ScoreBias(nn.Module):
    """Base class of the positions that add a bias to the attention scores."""

    content: bool = False  # True when the bias depends on q or k (not a score_mod of positions alone)

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, *, causal: bool, scale: float, q_offset: int | None = None) -> Tensor:
        """The float bias ``(B or 1, H, Tq, Tk)`` for ``q: (B, H, Tq, D)`` against ``k: (B, G, Tk, D)``."""
        raise NotImplementedError

    def score_mod(self, q_offset: int, *, causal: bool) -> ScoreMod | None:
        """The same bias as a FlexAttention score modification for queries at ``q_offset + i``, or None."""
        return None
