"""T5's bucketed relative position bias (Raffel et al. 2020, section 2.1 "Relative position embeddings").

Each head learns one scalar per bucket of the relative position j - i (key minus query), added to
the attention logits. Half of the buckets of a direction hold the exact offsets 0 .. n/2 - 1; the
other half cover n/2 .. ``max_distance`` in logarithmically growing ranges, and every farther offset
shares the last bucket. Bidirectional attention (the encoder) gives each direction half the buckets;
causal attention (the decoder) uses all of them for the past. As in T5, one table serves every layer
of a stack (:func:`attnkit.positions.hook.share_positions` ties the layers to the first one); the
bucket ids are computed once per shape, and without autograd the bias once per step for all layers.

The bias depends on i and j only through j - i, so the ``(Tq, Tk)`` bias of every head is a Toeplitz
matrix of the ``Tq + Tk - 1`` distances that occur. The ``distance`` paths look the table up once per
distance, ``d[h, m] = table[bucket(m - (Tq - 1) - q_offset), h]`` for ``m = j - i + Tq - 1``, which
the table's gradient then reaches through ``Tq + Tk - 1`` lookups instead of ``Tq·Tk``:

* ``distance`` expands ``d`` to the bias with one strided copy (:func:`toeplitz`), whose backward sums
  the incoming gradient over the batch and along each diagonal (a skew of the rows turns diagonals
  into columns; one sum, no scatter);
* ``flex_band`` (causal self-attention on CUDA) hands FlexAttention the ``D + 1`` distinct values of a row,
  ``D`` the first distance of the farthest bucket, without autograd, and computes their gradient outside
  the kernel on the band of distances below ``D`` (:mod:`attnkit.positions.t5_band`);
* ``dense`` gathers the table at the ``(Tq, Tk)`` bucket ids (the reference).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.positions.base import ScoreBias, ScoreMod, distances
from attnkit.positions.t5_band import band_score_mod

TrainPath = Literal["dense", "distance", "flex_band"]
TRAIN_PATHS: tuple[str, ...] = ("dense", "distance", "flex_band")


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


class _Toeplitz(torch.autograd.Function):
    """``bias[0, h, i, j] = d[h, j - i + Tq - 1]`` and its adjoint (see :func:`toeplitz`)."""

    @staticmethod
    def forward(ctx: Any, d: Tensor, tq: int, tk: int, dtype: torch.dtype) -> Tensor:  # type: ignore[override]
        ctx.tq, ctx.tk, ctx.d_dtype = tq, tk, d.dtype
        # Window w of unfold holds d[h, w : w + Tk]; row i of the bias is window Tq - 1 - i (selected in one
        # row-major copy; flip would lay the result out by the view's tied strides).
        windows = d.to(dtype).contiguous().unfold(-1, tk, 1)  # (H, Tq, Tk) view
        return windows.index_select(-2, torch.arange(tq - 1, -1, -1, device=d.device))[None]  # (1, H, Tq, Tk)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        return toeplitz_adjoint(grad, ctx.tq, ctx.tk).to(ctx.d_dtype), None, None, None


def toeplitz(d: Tensor, tq: int, tk: int, dtype: torch.dtype | None = None) -> Tensor:
    """Per-distance values ``d: (H, Tq + Tk - 1)`` as the bias ``(1, H, Tq, Tk)``, ``bias[i, j] = d[j - i + Tq - 1]``.

    Args:
        d: one value per head and distance, index ``m = j - i + Tq - 1``.
        tq: queries.
        tk: keys.
        dtype: the bias's dtype (``d``'s if None); the gradient returns in ``d``'s.

    Returns:
        ``(1, H, Tq, Tk)``; its backward is :func:`toeplitz_adjoint`.
    """
    if d.shape[-1] != tq + tk - 1:
        raise ValueError(f"d has {d.shape[-1]} distances; Tq={tq} and Tk={tk} need {tq + tk - 1}")
    return _Toeplitz.apply(d, tq, tk, d.dtype if dtype is None else dtype)


def toeplitz_adjoint(grad: Tensor, tq: int, tk: int) -> Tensor:
    """Sum of ``grad: (..., H, Tq, Tk)`` over the leading dims and along each diagonal: ``(H, Tq + Tk - 1)`` in fp32
    (or fp64 for fp64 input), entry ``m`` collecting every ``(i, j)`` with ``j - i + Tq - 1 = m``.

    Row i is written into a zero buffer of rows of ``L = Tq + Tk - 1`` at column ``Tq - 1`` onwards; read
    back as rows of ``L + 1``, row i has moved left by i, so entry (i, j) sits in column ``j - i + Tq - 1``
    of row i and one sum over the rows gives every diagonal.
    """
    acc = torch.float64 if grad.dtype == torch.float64 else torch.float32
    g = grad.reshape(-1, *grad.shape[-3:])
    g = g[0] if g.shape[0] == 1 else g.sum(0, dtype=acc)  # (H, Tq, Tk), cast below where it is copied
    h, length = g.shape[0], tq + tk - 1
    buf = torch.empty(h, tq * (length + 1), dtype=acc, device=grad.device)
    rows = buf[:, : tq * length].view(h, tq, length)
    rows[:, :, : tq - 1].zero_()
    rows[:, :, tq - 1:] = g
    buf[:, tq * length:].zero_()
    return buf.view(h, tq, length + 1).sum(1)[:, :length]  # (H, Tq + Tk - 1)


class T5RelativeBias(ScoreBias):
    """One learned scalar per (bucket, head), looked up by the bucket of j - i.

    Args:
        n_heads: heads H.
        n_buckets: buckets (T5: 32).
        max_distance: the farthest offset with a bucket of its own range (T5: 128).
        bidirectional: ``None`` decides per call: bidirectional unless the attention is causal.
        train_path: how a trained table reaches the scores (module docstring): ``distance`` (the Toeplitz
            expansion of the per-distance lookup, on every device), ``flex_band`` (causal self-attention in
            FlexAttention on CUDA, the band's gradient outside the kernel; elsewhere as ``distance``) or ``dense``.
            Evaluation, decoding and a frozen table take the bucket ``score_mod`` on CUDA either way.
        lr_scale: the table's learning rate over the optimizer's (:mod:`attnkit.training.optim`). Adam moves a
            weight by about the learning rate per step, so in a short run at a small learning rate the table cannot
            reach the large negative biases that keep far keys out of the softmax; past the training length every
            key beyond ``max_distance`` shares the last bucket, and only a strongly negative one there keeps the
            model's attention local. The table is never weight-decayed (it is a table of biases).
    """

    def __init__(self, n_heads: int, n_buckets: int = 32, max_distance: int = 128, bidirectional: bool | None = None,
                 train_path: TrainPath = "distance", lr_scale: float = 1.0) -> None:
        super().__init__()
        least = n_buckets // (4 if bidirectional else 2)  # the exact buckets of one direction (causal: n/2)
        if n_buckets < 4 or max_distance <= least:
            raise ValueError(f"n_buckets={n_buckets} must be at least 4 and max_distance={max_distance} above {least} "
                             f"(n_buckets/{4 if bidirectional else 2}: the exact buckets{'' if bidirectional else ' of causal attention'})")
        if train_path not in TRAIN_PATHS:
            raise ValueError(f"train_path={train_path!r} is not one of {TRAIN_PATHS}")
        if not lr_scale > 0:
            raise ValueError(f"lr_scale={lr_scale!r} must be positive")
        self.n_buckets, self.max_distance, self.bidirectional = n_buckets, max_distance, bidirectional
        self.train_path = train_path
        self.table = nn.Embedding(n_buckets, n_heads)  # T5's relative_attention_bias
        nn.init.normal_(self.table.weight, std=n_heads**-0.5)
        # A table of biases: never weight-decayed; its own learning rate (attnkit.training.optim reads both marks).
        self.table.weight.no_weight_decay = True  # type: ignore[attr-defined]
        if lr_scale != 1.0:
            self.table.weight.lr_scale = float(lr_scale)  # type: ignore[attr-defined]
        self._buckets: dict[tuple, Tensor] = {}
        self._bias: tuple[tuple, Tensor] | None = None
        # the causal buckets of distances 0..D, D the first distance of the farthest bucket (band_values), found here
        # once: a data-dependent length inside a compiled step would not trace. A bidirectional table (never causal)
        # may not reach its last bucket in one direction; it has no band.
        ids = relative_position_bucket(-torch.arange(max_distance + 1, device="cpu"), bidirectional=False, n_buckets=n_buckets,
                                       max_distance=max_distance).tolist()
        band = ids[: ids.index(n_buckets - 1) + 1] if n_buckets - 1 in ids else []
        self.register_buffer("band_ids", torch.tensor(band, dtype=torch.long), persistent=False)  # on the default device

    def lookup(self, ids: Tensor) -> Tensor:
        """The table's rows ``(L, H)`` for bucket ids ``(L,)``, as a sum over one-hot columns: the same values as the
        embedding lookup, but its backward is a product and a sum, where the embedding's backward on CUDA reads a count
        back to the host, a synchronisation in every layer of every training step."""
        w = self.table.weight  # (n_buckets, H)
        one_hot = ids[:, None] == torch.arange(self.n_buckets, device=ids.device)  # (L, n_buckets)
        return (one_hot[:, :, None] * w).sum(1)  # exact: one nonzero term per row

    def _trains(self) -> bool:
        return self.table.weight.requires_grad and torch.is_grad_enabled()

    def trains_in_flex(self) -> bool:
        """Whether FlexAttention takes this call. Under autograd, the bucket ``score_mod`` would leave FlexAttention's
        backward pass adding every score's gradient into its (bucket, head) cell, B·H·Tq·Tk atomic additions into
        n_buckets·H addresses, which serialise; only ``flex_band`` then stays in FlexAttention (its
        :meth:`flex_score_mod` reads the band without autograd, :mod:`attnkit.positions.t5_band`). The other paths
        build the bias and hand it to the kernel, whose backward returns the bias gradient as one tensor that the
        lookup reduces."""
        return not self._trains() or self.train_path == "flex_band"

    def _side(self, causal: bool) -> bool:
        return (not causal) if self.bidirectional is None else self.bidirectional

    def buckets(self, q_pos: Tensor, tk: int, causal: bool, q_offset: int | None = None) -> Tensor:
        """Bucket ids ``(..., Tq, Tk)``; kept per shape when the queries are ``q_offset + arange(Tq)``
        (integer tensors, no gradient: the table lookup stays in every layer's graph)."""
        bidirectional = self._side(causal)
        key = None if q_offset is None else (q_offset, q_pos.shape[-1], tk, bidirectional, str(q_pos.device))
        if key is not None and key in self._buckets:
            return self._buckets[key]
        ids = relative_position_bucket(-distances(q_pos, tk), bidirectional=bidirectional, n_buckets=self.n_buckets,
                                       max_distance=self.max_distance)
        self._keep(key, ids)
        return ids

    def _keep(self, key: tuple | None, ids: Tensor) -> None:
        if key is not None and not torch.compiler.is_compiling():
            if len(self._buckets) > 16:
                self._buckets.clear()
            self._buckets[key] = ids

    def distance_buckets(self, q_offset: int, tq: int, tk: int, causal: bool, device: torch.device) -> Tensor:
        """Bucket ids ``(Tq + Tk - 1,)`` of the distances ``j - i`` for queries at ``q_offset + i``, index ``j - i + Tq - 1``
        (kept per shape)."""
        bidirectional = self._side(causal)
        key = ("distance", q_offset, tq, tk, bidirectional, str(device))
        if key in self._buckets:
            return self._buckets[key]
        relative = torch.arange(tq + tk - 1, device=device) - (tq - 1 + q_offset)  # j - (q_offset + i)
        ids = relative_position_bucket(relative, bidirectional=bidirectional, n_buckets=self.n_buckets,
                                       max_distance=self.max_distance)
        self._keep(key, ids)
        return ids

    def distance_values(self, q_offset: int, tq: int, tk: int, causal: bool) -> Tensor:
        """``d: (H, Tq + Tk - 1)``, ``d[h, j - i + Tq - 1]`` the bias of query ``q_offset + i`` on key j (with autograd)."""
        return self.lookup(self.distance_buckets(q_offset, tq, tk, causal, self.table.weight.device)).t()

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, *, causal: bool, scale: float, q_offset: int | None = None) -> Tensor:
        # Without autograd (evaluation, decoding) the bias itself is kept for the next layers of the stack,
        # as T5 hands its first layer's position_bias on; with autograd each layer looks the table up again.
        key = None
        if q_offset is not None and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            key = (q_offset, q_pos.shape[-1], k.shape[-2], causal, q.dtype, str(q.device), self.table.weight._version)
            if self._bias is not None and self._bias[0] == key:
                return self._bias[1]
        tq, tk = q_pos.shape[-1], k.shape[-2]
        if q_offset is not None and self.train_path != "dense":
            bias = toeplitz(self.distance_values(q_offset, tq, tk, causal), tq, tk, q.dtype)  # (1, H, Tq, Tk)
        else:
            values = self.table(self.buckets(q_pos, tk, causal, q_offset))  # (..., Tq, Tk, H)
            bias = values.movedim(-1, -3)  # (..., H, Tq, Tk)
            bias = (bias if bias.dim() == 4 else bias[None]).to(q.dtype)
        if key is not None:
            self._bias = (key, bias)
        return bias

    def score_mod(self, q_offset: int, *, causal: bool) -> ScoreMod | None:
        """The bias as a FlexAttention ``score_mod`` reading the bucket table (its backward also gives the table's gradient)."""
        table = self.table.weight  # (n_buckets, H)
        bidirectional = self._side(causal)
        n_buckets, max_distance = self.n_buckets, self.max_distance

        def t5_bias(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            bucket = relative_position_bucket(kv_idx - q_idx - q_offset, bidirectional=bidirectional, n_buckets=n_buckets,
                                              max_distance=max_distance)
            return score + table[bucket, h]

        return t5_bias

    def band_values(self) -> Tensor:
        """``e: (H, D + 1)`` with autograd: ``e[h, m]`` the causal bias at distance ``m = i - j``, ``e[h, D]`` that of every
        distance from ``D`` on, ``D`` the first distance in the farthest bucket."""
        return self.lookup(self.band_ids).t()

    def flex_score_mod(self, q_offset: int, tq: int, tk: int, *, causal: bool) -> ScoreMod | None:
        """The ``score_mod`` FlexAttention takes for this call, or None where the bias goes to the kernel instead.

        For causal self-attention (``q_offset`` 0, ``Tq == Tk``) the band's ``score_mod``
        (:func:`~attnkit.positions.t5_band.band_score_mod`), carrying the band values as ``band_values`` for
        :func:`attnkit.attention.flex.positional`: without autograd on the table always (the same values as the bucket
        formula, read from ``H·(D + 1)`` numbers in the queries' dtype; the formula over the float32 table asks a GPT's
        kernel for more shared memory than the card has), while training only on the ``flex_band`` path, which also
        takes their gradient. Other calls: :meth:`score_mod` without autograd, else None (the bias goes to the kernel).
        """
        causal_self = causal and not self._side(causal) and q_offset == 0 and tq == tk
        if not self._trains():
            if not causal_self:
                return self.score_mod(q_offset, causal=causal)
            with torch.no_grad():
                e = self.band_values()
            mod = band_score_mod(e)
            mod.band_values = e  # type: ignore[attr-defined]
            return mod
        if self.train_path != "flex_band" or not causal_self:
            return None
        e = self.band_values()
        mod = band_score_mod(e.detach())
        mod.band_values = e  # type: ignore[attr-defined]
        return mod
