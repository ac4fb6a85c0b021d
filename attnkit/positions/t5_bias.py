"""T5's bucketed relative position bias (Raffel et al. 2020, section 2.1 "Relative position embeddings").

Each head learns one scalar per bucket of the relative position j - i (key minus query), added to
the attention logits. Half of the buckets of a direction hold the exact offsets 0 .. n/2 - 1; the
other half cover n/2 .. ``max_distance`` in logarithmically growing ranges, and every farther offset
shares the last bucket. Bidirectional attention (the encoder) gives each direction half the buckets;
causal attention (the decoder) uses all of them for the past. As in T5, one table serves every layer
of a stack (:func:`attnkit.positions.hook.share_positions` ties the layers to the first one); the
bucket ids are computed once per shape, and without autograd the bias once per step for all layers.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnkit.positions.base import ScoreBias, ScoreMod, distances


def relative_position_bucket(relative: Tensor, *, bidirectional: bool, n_buckets: int = 32, max_distance: int = 128) -> Tensor:
    """Bucket ids in ``[0, n_buckets)`` of relative positions ``j - i`` (any integer tensor).

    Args:
        relative: key position minus query position.
        bidirectional: split the buckets between the two directions (else future offsets share bucket 0).
        n_buckets: buckets in all.
        max_distance: offsets at least this far share the farthest bucket.

    Returns:
        ``long`` tensor of ``relative``'s shape.
    """
    n = n_buckets // 2 if bidirectional else n_buckets
    if bidirectional:
        side = (relative > 0).long() * n  # the future's buckets come after the past's
        dist = relative.abs()
    else:
        side = torch.zeros_like(relative)
        dist = (-relative).clamp(min=0)
    exact = n // 2
    far = exact + (torch.log(dist.clamp(min=1).float() / exact) / math.log(max_distance / exact) * (n - exact)).long()
    far = far.clamp(max=n - 1)  # (relative's shape)
    return side + torch.where(dist < exact, dist, far)


class T5RelativeBias(ScoreBias):
    """One learned scalar per (bucket, head), looked up by the bucket of j - i.

    Args:
        n_heads: heads H.
        n_buckets: buckets (T5: 32).
        max_distance: the farthest offset with a bucket of its own range (T5: 128).
        bidirectional: ``None`` decides per call: bidirectional unless the attention is causal.
    """

    def __init__(self, n_heads: int, n_buckets: int = 32, max_distance: int = 128, bidirectional: bool | None = None) -> None:
        super().__init__()
        if n_buckets < 4 or max_distance <= n_buckets // 4:
            raise ValueError(f"n_buckets={n_buckets} must be at least 4 and max_distance={max_distance} above n_buckets/4")
        self.n_buckets, self.max_distance, self.bidirectional = n_buckets, max_distance, bidirectional
        self.table = nn.Embedding(n_buckets, n_heads)  # T5's relative_attention_bias
        nn.init.normal_(self.table.weight, std=n_heads**-0.5)
        self._buckets: dict[tuple, Tensor] = {}
        self._bias: tuple[tuple, Tensor] | None = None

    def trains_in_flex(self) -> bool:
        """False while autograd tracks the table: its gradient would leave FlexAttention's backward pass as an
        atomic add of every score's gradient into its (bucket, head) cell, B·H·Tq·Tk additions into
        n_buckets·H addresses, which serialise. The hook then builds the bias densely and hands it to the
        kernel, whose backward returns the bias gradient as one tensor that the table lookup reduces;
        evaluation, decoding and a frozen table keep the ``score_mod``."""
        return not (self.table.weight.requires_grad and torch.is_grad_enabled())

    def buckets(self, q_pos: Tensor, tk: int, causal: bool, q_offset: int | None = None) -> Tensor:
        """Bucket ids ``(..., Tq, Tk)``; kept per shape when the queries are ``q_offset + arange(Tq)``
        (integer tensors, no gradient: the table lookup stays in every layer's graph)."""
        bidirectional = (not causal) if self.bidirectional is None else self.bidirectional
        key = None if q_offset is None else (q_offset, q_pos.shape[-1], tk, bidirectional, str(q_pos.device))
        if key is not None and key in self._buckets:
            return self._buckets[key]
        ids = relative_position_bucket(-distances(q_pos, tk), bidirectional=bidirectional, n_buckets=self.n_buckets,
                                       max_distance=self.max_distance)
        if key is not None and not torch.compiler.is_compiling():
            if len(self._buckets) > 16:
                self._buckets.clear()
            self._buckets[key] = ids
        return ids

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, *, causal: bool, scale: float, q_offset: int | None = None) -> Tensor:
        # Without autograd (evaluation, decoding) the bias itself is kept for the next layers of the stack,
        # as T5 hands its first layer's position_bias on; with autograd each layer looks the table up again.
        key = None
        if q_offset is not None and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            key = (q_offset, q_pos.shape[-1], k.shape[-2], causal, q.dtype, str(q.device), self.table.weight._version)
            if self._bias is not None and self._bias[0] == key:
                return self._bias[1]
        values = self.table(self.buckets(q_pos, k.shape[-2], causal, q_offset))  # (..., Tq, Tk, H)
        bias = values.movedim(-1, -3)  # (..., H, Tq, Tk)
        bias = (bias if bias.dim() == 4 else bias[None]).to(q.dtype)
        if key is not None:
            self._bias = (key, bias)
        return bias

    def score_mod(self, q_offset: int, *, causal: bool) -> ScoreMod | None:
        """The bias as a FlexAttention ``score_mod`` (its backward also gives the table's gradient)."""
        table = self.table.weight  # (n_buckets, H)
        bidirectional = (not causal) if self.bidirectional is None else self.bidirectional
        n_buckets, max_distance = self.n_buckets, self.max_distance

        def t5_bias(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            bucket = relative_position_bucket(kv_idx - q_idx - q_offset, bidirectional=bidirectional, n_buckets=n_buckets,
                                              max_distance=max_distance)
            return score + table[bucket, h]

        return t5_bias
