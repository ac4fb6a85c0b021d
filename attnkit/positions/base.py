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
        """The float score bias of queries against keys.

        Args:
            q: ``(B, H, Tq, D)`` queries (after any projection; content terms use them).
            k: ``(B, G, Tk, D)`` keys, every key the kernel sees (G divides H).
            q_pos: the queries' positions in the keys' frame, ``(Tq,)`` or ``(B, Tq)``.
            causal: whether the attention is causal (ALiBi's and T5's one-sided forms).
            scale: the kernel's factor on q k^T; content terms are scaled alike.
            q_offset: ``q_pos`` is ``q_offset + arange(Tq)`` when given (shape-keyed caches, shifts).

        Returns:
            ``(B or 1, H, Tq, Tk)`` in ``q``'s dtype.
        """
        raise NotImplementedError

    def score_mod(self, q_offset: int, *, causal: bool) -> ScoreMod | None:
        """The same bias as a FlexAttention score modification for queries at ``q_offset + i``, or None."""
        return None
