"""ALiBi: attention with linear biases (Press et al. 2022, section 3).

No position embeddings; each head h adds a penalty proportional to the query-key distance:

    softmax(q_i K^T + m_h * [-(i - 1), ..., -1, 0])

with the head slopes a geometric sequence. For n heads a power of two, m_h = 2^(-8h/n), h = 1..n
(the paper: 1/2, 1/4, ..., 1/256 for 8 heads). For other n, the authors' code takes the n' slopes
of the largest power of two n' < n, then every other slope of 2n' heads for the remaining n - n'.
The paper defines the causal case; for bidirectional attention the penalty is -m_h |i - j|.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnkit.positions.base import ScoreBias, ScoreMod, as_heads, distances


def alibi_slopes(n_heads: int) -> Tensor:
    """The ``(n_heads,)`` slopes m_h of section 3 (float32).

    Args:
        n_heads: number of heads (any positive count).

    Returns:
        The slopes, largest first.
    """
    if n_heads < 1:
        raise ValueError(f"n_heads={n_heads!r} must be positive")

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    if n_heads & (n_heads - 1) == 0:
        return torch.tensor(power_of_two(n_heads))
    below = 2 ** math.floor(math.log2(n_heads))
    return torch.tensor(power_of_two(below) + power_of_two(2 * below)[0::2][: n_heads - below])


_SHARED: dict[tuple[int, str], Tensor] = {}


class ALiBi(ScoreBias):
    """Per-head linear distance penalties (Press et al. 2022); no parameters.

    Args:
        n_heads: number of heads; the slopes follow :func:`alibi_slopes`.
    """

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)  # (H,)

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, *, causal: bool, scale: float, q_offset: int | None = None) -> Tensor:
        dist = distances(q_pos, k.shape[-2]).float()  # (..., Tq, Tk), i - j
        dist = dist.clamp(min=0) if causal else dist.abs()  # future keys are masked when causal
        m = self.slopes.to(q.device)
        bias = -m.view(-1, 1, 1) * dist.unsqueeze(-3)  # (..., H, Tq, Tk)
        return as_heads(bias).to(q.dtype)

    def score_mod(self, q_offset: int, *, causal: bool) -> ScoreMod | None:
        # one slopes tensor per (heads, device) for every layer: the compiled FlexAttention sees the
        # same captured tensor in each layer's score_mod and need not specialise per layer
        slopes = _SHARED.setdefault((self.slopes.numel(), str(self.slopes.device)), self.slopes)

        def alibi(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            dist = q_idx + q_offset - kv_idx
            dist = torch.clamp(dist, min=0) if causal else torch.abs(dist)
            return score - slopes[h] * dist

        return alibi
