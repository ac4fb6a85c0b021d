"""Sparse softmax attention: sliding, dilated and global windows, Sparse Transformer and BigBird patterns.

Every kernel here is softmax(Q K^T * scale + bias) V (Vaswani et al. 2017, eq. (1)) restricted
to a fixed pattern (:mod:`attnkit.attention.patterns` gives the definitions). Three paths
compute it, and must agree:

* reference (``need_weights=True`` or ``backend="dense"``): the dense pattern mask ANDed with
  the user's mask, then the shared masked softmax;
* GPU (``backend="auto"`` on CUDA, at least 128 queries, no bias or dropout, no user mask
  other than key padding ``(B, 1, 1, Tk)``, which becomes a score modification): FlexAttention
  with a block mask cached per shape (:mod:`attnkit.attention.flex`); decoding
  steps (a few queries over a growing cache) take the chunked path, which needs no compile
  per length;
* otherwise: chunked attention over gathered keys (:mod:`attnkit.attention.chunked`), memory
  O(Tq * keys-per-query), never a ``Tq x Tk`` matrix.

Papers: Beltagy et al. 2020 (Longformer, sliding/dilated/global windows), Child et al. 2019
(Sparse Transformer, strided/fixed), Zaheer et al. 2020 (BigBird). Deviation from BigBird:
the random blocks are the same for every head and every call (one seed per kernel).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from torch import Tensor

from attnkit.attention import chunked, flex, graphed
from attnkit.attention.base import AttentionKernel
from attnkit.attention.chunked import Part
from attnkit.attention.patterns import BigBird, DilatedWindow, Fixed, GlobalWindow, Pattern, SlidingWindow, Strided
from attnkit.attention.registry import register

Backend = Literal["auto", "chunked", "flex", "dense"]


class SparseAttention(AttentionKernel):
    """Softmax attention over a pattern; subclasses say which pattern and how to chunk it.

    Args:
        dropout: dropout on the attention weights (training only).
        scale: score scale, default 1/sqrt(d_k).
        chunk: query rows per chunk on the chunked path.
        backend: ``"auto"`` (FlexAttention on CUDA where it applies, else chunked),
            ``"chunked"``, ``"flex"`` or ``"dense"`` (the reference path always).
    """

    def __init__(self, dropout: float = 0.0, scale: float | None = None, chunk: int = 256, backend: Backend = "auto") -> None:
        super().__init__(dropout)
        if scale is not None and not scale > 0:
            raise ValueError(f"scale={scale!r} must be positive")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk={chunk!r} must be a positive integer")
        if backend not in ("auto", "chunked", "flex", "dense"):
            raise ValueError(f"backend={backend!r}; choose one of auto, chunked, flex, dense")
        self.scale, self.chunk, self.backend = scale, chunk, backend
        self.flex_tiles: tuple[int, int] | None = None  # FlexAttention's block-mask tiles; None = its default
        self.cuda_graphs = False  # FlexAttention calls replayed as CUDA graphs (attnkit.attention.graphed)
        self._patterns: dict[bool, Pattern] = {}
        self._plans: dict[tuple, list[Part]] = {}

    # -- what subclasses define -------------------------------------------------------
    def make_pattern(self, causal: bool) -> Pattern:
        raise NotImplementedError

    def plan(self, pattern: Pattern, tq: int, tk: int, device: torch.device) -> list[Part]:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------
    def pattern(self, causal: bool) -> Pattern:
        """The pattern for this call (built once per ``causal``; raises if it cannot be causal)."""
        if causal not in self._patterns:
            self._patterns[causal] = self.make_pattern(causal)
        return self._patterns[causal]

    def dense_mask(self, tq: int, tk: int | None = None, *, causal: bool = False, device: torch.device | None = None) -> Tensor:
        """This kernel's pattern as a dense boolean mask, ``(Tq, Tk)`` or ``(H, Tq, Tk)`` (True = may attend)."""
        return self.pattern(causal).dense(tq, tq if tk is None else tk, device)

    def _check_heads(self, pattern: Pattern, n_heads: int) -> None:
        if pattern.per_head and pattern.n_heads != n_heads:
            raise ValueError(f"{self.kind}: the pattern has {pattern.n_heads} per-head values for {n_heads} heads")

    def _scale(self, d: int) -> float:
        return self.scale if self.scale is not None else 1.0 / math.sqrt(d)

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return torch.matmul(q, k.transpose(-2, -1)) * self._scale(q.shape[-1])  # (B, H, Tq, Tk)

    def weights(
        self, q: Tensor, k: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None, causal: bool = False
    ) -> Tensor:
        pattern = self.pattern(causal)
        self._check_heads(pattern, q.shape[1])
        allowed = pattern.dense(q.shape[-2], k.shape[-2], q.device)  # (Tq, Tk) or (H, Tq, Tk)
        return super().weights(q, k, mask=allowed if mask is None else mask & allowed, bias=bias, causal=causal)

    def fast(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None, causal: bool
    ) -> Tensor | None:
        pattern = self.pattern(causal)
        self._check_heads(pattern, q.shape[1])
        tq, tk = q.shape[-2], k.shape[-2]
        pattern.check(tq, tk)
        if self.backend == "dense":
            return None
        if tq == 0 or tk == 0:
            return q.new_zeros(*q.shape[:-1], v.shape[-1])
        p = self.dropout if self.training else 0.0
        scale = self._scale(q.shape[-1])
        key_keep = flex.key_padding(mask, q.shape[0], tk)  # a key-padding mask FlexAttention takes as a score mod
        flex_ok = (mask is None or key_keep is not None) and bias is None and not p
        use_flex = flex.available(q) and tq >= flex.MIN_QUERIES and flex_ok
        if self.backend == "flex" or (self.backend == "auto" and use_flex):
            if not flex.available(q):
                raise ValueError(f"{self.kind}: backend='flex' needs CUDA tensors and a power-of-two head dim >= 16")
            if not flex_ok:
                raise ValueError(f"{self.kind}: backend='flex' takes only a key-padding mask (B, 1, 1, Tk), no bias "
                                 "or dropout; use backend='auto'")
            graphs = graphed.cache_for(self) if self.cuda_graphs else None
            return flex.attend(q, k, v, pattern, (self.kind, self._key(), causal), scale, key_keep, self.flex_tiles, graphs)
        key = (causal, tq, tk, str(q.device), self.chunk)
        if key not in self._plans:
            if len(self._plans) > 16:
                self._plans.clear()
            with torch.inference_mode(False):  # cached index tensors must be usable by autograd later
                parts = self.plan(pattern, tq, tk, q.device)
                for part in parts:
                    part.buckets()  # stack the groups now, outside inference mode too
                self._plans[key] = parts
        return chunked.attend(q, k, v, self._plans[key], mask=mask, bias=bias, scale=scale, dropout_p=p)

    def _key(self) -> tuple:
        """What identifies the pattern's parameters (for the block-mask cache)."""
        return tuple(sorted((k, repr(v)) for k, v in vars(self).items() if not k.startswith("_") and k != "training"))

    def _ranges(self, tq: int) -> list[tuple[int, int]]:
        return [(a, min(tq, a + self.chunk)) for a in range(0, tq, self.chunk)]


def _arange(lo: int, hi: int, device: torch.device, step: int = 1) -> Tensor:
    return torch.arange(lo, max(lo, hi), step, device=device)


def _band_groups(tq: int, tk: int, left: int, right: int, ranges: list[tuple[int, int]], device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """Contiguous query chunks, each with the contiguous key band around it."""
    o = tk - tq
    return [
        (_arange(a, b, device), _arange(max(0, o + a - left), min(tk, o + b - 1 + right + 1), device))
        for a, b in ranges
    ]


@register("sliding_window")
class SlidingWindowAttention(SparseAttention):
    """Longformer's sliding window (Beltagy et al. 2020, section 3.1): ``|i - j| <= window // 2``."""

    def __init__(self, window: int = 512, dropout: float = 0.0, scale: float | None = None, chunk: int = 256, backend: Backend = "auto") -> None:
        super().__init__(dropout, scale, chunk, backend)
        self.window = window
        self.pattern(False)  # validate now

    def make_pattern(self, causal: bool) -> Pattern:
        return SlidingWindow(self.window, causal)

    def plan(self, pattern: Pattern, tq: int, tk: int, device: torch.device) -> list[Part]:
        left, right = pattern.bounds()  # type: ignore[attr-defined]
        return [Part(pattern.mask_fn(tq, tk, device), _band_groups(tq, tk, left, right, self._ranges(tq), device))]


@register("dilated_window")
class DilatedWindowAttention(SparseAttention):
    """Longformer's dilated window (section 3.1): the window with gaps, dilation per head allowed.

    The chunked path splits positions by residue modulo the dilation: within one residue class
    the pattern is a plain window, so each query gathers ``window + chunk`` keys, not ``window * d``.
    """

    def __init__(
        self, window: int = 512, dilation: int | Sequence[int] = 2, n_heads: int | None = None, dropout: float = 0.0,
        scale: float | None = None, chunk: int = 256, backend: Backend = "auto",
    ) -> None:
        super().__init__(dropout, scale, chunk, backend)
        self.window, self.dilation = window, dilation if isinstance(dilation, int) else list(dilation)
        pattern = self.pattern(False)
        if n_heads is not None:
            self._check_heads(pattern, n_heads)

    def make_pattern(self, causal: bool) -> Pattern:
        return DilatedWindow(self.window, self.dilation, causal)

    def plan(self, pattern: Pattern, tq: int, tk: int, device: torch.device) -> list[Part]:
        assert isinstance(pattern, DilatedWindow)
        keep, o, parts = pattern.mask_fn(tq, tk, device), tk - tq, []
        for d in sorted(set(pattern.dilations)):
            left, right = pattern.bounds(d)
            groups = []
            for r in range(d):
                rows = _arange((r - o) % d, tq, device, d)
                for qr in rows.split(self.chunk) if rows.numel() else ():
                    lo = o + int(qr[0]) - left
                    lo = lo if lo >= 0 else r
                    groups.append((qr, _arange(lo, min(tk, o + int(qr[-1]) + right + 1), device, d)))
            heads = None
            if pattern.per_head:
                heads = torch.tensor([h for h, dh in enumerate(pattern.dilations) if dh == d], device=device)
            parts.append(Part(keep, groups, heads))
        return parts


@register("global_window")
class GlobalWindowAttention(SparseAttention):
    """Longformer's sliding window plus global attention (section 3.1) at ``global_positions``."""

    def __init__(
        self, window: int = 512, global_positions: Sequence[int] = (0,), dropout: float = 0.0, scale: float | None = None,
        chunk: int = 256, backend: Backend = "auto",
    ) -> None:
        super().__init__(dropout, scale, chunk, backend)
        self.window, self.global_positions = window, list(global_positions)
        self.pattern(False)

    def make_pattern(self, causal: bool) -> Pattern:
        return GlobalWindow(self.window, self.global_positions, causal)

    def plan(self, pattern: Pattern, tq: int, tk: int, device: torch.device) -> list[Part]:
        assert isinstance(pattern, GlobalWindow)
        keep = pattern.mask_fn(tq, tk, device)
        o = tk - tq
        g = torch.tensor(pattern.global_positions, dtype=torch.long, device=device)
        g_rows = g[g >= o] - o  # the global positions that have a query row
        is_global = torch.zeros(tq, dtype=torch.bool, device=device)
        is_global[g_rows] = True
        left, right = pattern.bounds()
        groups = []
        for qr, kr in _band_groups(tq, tk, left, right, self._ranges(tq), device):
            qr = qr[~is_global[qr]]
            if qr.numel():
                groups.append((qr, torch.unique(torch.cat([kr, g]))))
        if g_rows.numel():
            groups.append((g_rows, _arange(0, tk, device)))  # global queries see every key
        return [Part(keep, groups)]


@register("strided")
class StridedAttention(SparseAttention):
    """Sparse Transformer's strided pattern (Child et al. 2019, section 4.2): a band of ``stride``
    plus every ``stride``-th key. Chunked as two disjoint parts (band; residue class minus band)."""

    def __init__(self, stride: int = 128, dropout: float = 0.0, scale: float | None = None, chunk: int = 256, backend: Backend = "auto") -> None:
        super().__init__(dropout, scale, chunk, backend)
        self.stride = stride
        self.pattern(False)

    def make_pattern(self, causal: bool) -> Pattern:
        return Strided(self.stride, causal)

    def plan(self, pattern: Pattern, tq: int, tk: int, device: torch.device) -> list[Part]:
        assert isinstance(pattern, Strided)
        l, o, full = pattern.stride, tk - tq, pattern.mask_fn(tq, tk, device)
        band = _band_groups(tq, tk, l - 1, 0 if pattern.causal else l - 1, self._ranges(tq), device)
        local = lambda h, qr, kr: pattern.local(qr + o, kr)  # noqa: E731
        rest = lambda h, qr, kr: full(h, qr, kr) & ~local(h, qr, kr)  # noqa: E731
        groups = []
        for r in range(l):
            rows = _arange((r - o) % l, tq, device, l)
            for qr in rows.split(self.chunk) if rows.numel() else ():
                hi = min(tk, o + int(qr[-1]) + 1) if pattern.causal else tk
                groups.append((qr, _arange(r, hi, device, l)))
        return [Part(local, band), Part(rest, groups)]


@register("fixed")
class FixedAttention(SparseAttention):
    """Sparse Transformer's fixed pattern (Child et al. 2019, section 4.2): the query's own block of
    ``stride`` positions plus the last ``c`` positions of every block."""

    def __init__(self, stride: int = 128, c: int = 8, dropout: float = 0.0, scale: float | None = None, chunk: int = 256, backend: Backend = "auto") -> None:
        super().__init__(dropout, scale, chunk, backend)
        self.stride, self.c = stride, c
        self.pattern(False)

    def make_pattern(self, causal: bool) -> Pattern:
        return Fixed(self.stride, self.c, causal)

    def plan(self, pattern: Pattern, tq: int, tk: int, device: torch.device) -> list[Part]:
        assert isinstance(pattern, Fixed)
        l, o = pattern.stride, tk - tq
        summary = torch.arange(tk, device=device)
        summary = summary[summary % l >= l - pattern.c]
        groups = []
        for a, b in self._ranges(tq):
            first, last = o + a, o + b - 1
            hi = min(tk, (last // l + 1) * l, last + 1 if pattern.causal else tk)
            s = summary[summary <= last] if pattern.causal else summary
            groups.append((_arange(a, b, device), torch.unique(torch.cat([_arange(max(0, (first // l) * l), hi, device), s]))))
        return [Part(pattern.mask_fn(tq, tk, device), groups)]


@register("bigbird")
class BigBirdAttention(SparseAttention):
    """BigBird's block-sparse attention (Zaheer et al. 2020, section 2 and appendix D): window,
    global and ``random_blocks`` seeded random blocks per query block; never full attention.

    ``flex_tiles=(128, 64)`` gives FlexAttention key tiles of 64 positions, so that 64-token
    blocks are whole key tiles; ``(64, 64)`` makes every tile whole, so that no tile needs the
    block-table lookup of a partial tile (less GPU time than the default tiles). Tiles other than the default compile with
    max-autotune, which finds backward tile sizes that fit (slow first call). ``cuda_graphs=True``
    captures each FlexAttention call (forward and backward, per input signature, without a
    key-padding mask) as two CUDA graphs and replays them (:mod:`attnkit.attention.graphed`):
    at a few thousand positions the compiled call's Python layers cost more than its GPU time.
    Each signature keeps its own buffers, so bucket lengths.
    """

    def __init__(
        self, block: int = 64, window_blocks: int = 3, global_blocks: int = 2, random_blocks: int = 3, seed: int = 0,
        dropout: float = 0.0, scale: float | None = None, backend: Backend = "auto", flex_tiles: tuple[int, int] | None = None,
        cuda_graphs: bool = False,
    ) -> None:
        super().__init__(dropout, scale, 256, backend)
        self.block, self.window_blocks, self.global_blocks, self.random_blocks, self.seed = block, window_blocks, global_blocks, random_blocks, seed
        if flex_tiles is not None:
            tiles = tuple(flex_tiles)
            if len(tiles) != 2 or any(isinstance(x, bool) or not isinstance(x, int) or x < 16 or x & (x - 1) for x in tiles):
                raise ValueError(f"flex_tiles={flex_tiles!r} must be two powers of two >= 16, (query tile, key tile)")
            self.flex_tiles = tiles  # type: ignore[assignment]
        if not isinstance(cuda_graphs, bool):
            raise ValueError(f"cuda_graphs={cuda_graphs!r} must be True or False")
        self.cuda_graphs = cuda_graphs
        self.pattern(False)

    def make_pattern(self, causal: bool) -> Pattern:
        return BigBird(self.block, self.window_blocks, self.global_blocks, self.random_blocks, self.seed, causal)

    def plan(self, pattern: Pattern, tq: int, tk: int, device: torch.device) -> list[Part]:
        assert isinstance(pattern, BigBird)
        b, n, o = pattern.block, -(-tk // pattern.block), tk - tq
        layout = pattern.layout(n)
        blocks = [_arange(i * b, min(tk, (i + 1) * b), device) for i in range(n)]
        groups = []
        for i in range(n):
            rows = blocks[i][blocks[i] >= o] - o  # query rows whose position is in block i
            if rows.numel():
                groups.append((rows, torch.cat([blocks[j] for j in layout[i].nonzero().flatten().tolist()])))
        return [Part(pattern.mask_fn(tq, tk, device), groups)]
