"""Sparse attention patterns as predicates over (query i, key j): the contract every fast path must meet.

Each pattern is a small object whose :meth:`Pattern.mask_fn` returns an elementwise predicate
``keep(h, q_row, k_row) -> bool tensor`` (True = may attend). The same predicate builds the
dense ``(Tq, Tk)`` (or per-head ``(H, Tq, Tk)``) reference mask here, the FlexAttention block
mask on GPU (:mod:`attnkit.attention.flex`) and the per-chunk masks of the CPU path
(:mod:`attnkit.attention.sparse`), so all three agree by construction.

Definitions (query position i, key position j, 0-based; with ``Tq != Tk``, e.g. decoding
with a KV cache, query row r sits at position ``i = Tk - Tq + r``, bottom-right aligned like
:func:`attnkit.attention.masks.causal_mask`):

* ``sliding_window(window=w)``: ``|i - j| <= w // 2`` (Beltagy et al. 2020, w/2 each side);
  causal: ``0 <= i - j < w``.
* ``dilated_window(window=w, dilation=d)``: ``|i - j| <= (w // 2) * d and (i - j) % d == 0``;
  causal: ``0 <= i - j < w * d and (i - j) % d == 0`` (w keys, as the causal sliding window).
  ``d`` may be a list, one value per head (Longformer's per-head dilation).
* ``global_window(window=w, global_positions=G)``: the sliding window, or ``i in G`` or ``j in G``.
  Bidirectional only: a global query sees every key, the future included.
* ``strided(stride=l)`` (Child et al. 2019): ``|i - j| < l or (i - j) % l == 0``;
  ``fixed(stride=l, c=c)``: ``j // l == i // l or j % l >= l - c``; both ``and j <= i`` when causal.
* ``bigbird(block=b, window_blocks=3, global_blocks=2, random_blocks=r, seed=s)`` (Zaheer et al.
  2020): over blocks of b positions (the last block may be short), query block I sees key block
  J iff ``|I - J| <= window_blocks // 2`` or ``J < global_blocks`` or J is one of I's r random
  blocks; query blocks ``I < global_blocks`` see every block. The random blocks of each query
  block are drawn without replacement from the blocks it does not already see, with a
  ``torch.Generator`` seeded by ``seed``; where fewer than r remain it takes all of them. The
  pattern is the same at every length: it is never swapped for full attention. Bidirectional only.

Sizes larger than the sequence are allowed and mean what the predicate says (a window wider
than the sequence sees everything; that is the user's choice, not a fallback). Non-positive
sizes, ``c`` outside ``1..stride``, global positions outside the sequence and ``causal=True``
for the bidirectional-only patterns raise ``ValueError``.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import Tensor

KeepFn = Callable[[Tensor, Tensor, Tensor], Tensor]  # (head, query row, key row) -> bool


def _positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")
    return value


class Pattern:
    """A sparsity pattern; subclasses define :meth:`keep_pos` over absolute positions."""

    per_head = False  # True when the pattern differs between heads
    bidirectional_only = False

    def __init__(self, causal: bool) -> None:
        if causal and self.bidirectional_only:
            raise ValueError(f"the {self.name} pattern cannot be causal: its global positions see the future; use causal=False")
        self.causal = causal

    @property
    def name(self) -> str:
        return type(self).__name__

    def check(self, tq: int, tk: int) -> None:
        """Raise ``ValueError`` if the pattern does not fit ``Tq`` queries over ``Tk`` keys."""

    def keep_pos(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        """Elementwise predicate over head ``h`` and absolute positions ``i`` (query), ``j`` (key)."""
        raise NotImplementedError

    def mask_fn(self, tq: int, tk: int, device: torch.device | None = None) -> KeepFn:
        """The predicate over query and key *rows* for ``Tq`` queries over ``Tk`` keys."""
        self.check(tq, tk)
        bound = copy.copy(self)  # lookup tables belong to this (Tk, device), not to the pattern
        bound._bind(tk, device)
        offset = tk - tq
        return lambda h, qr, kr: bound.keep_pos(h, qr + offset, kr)

    def _bind(self, tk: int, device: torch.device | None) -> None:
        """Build the lookup tensors a pattern needs for ``Tk`` keys on ``device``."""

    def dense(self, tq: int, tk: int, device: torch.device | None = None, n_heads: int = 1) -> Tensor:
        """The dense boolean mask: ``(Tq, Tk)``, or ``(H, Tq, Tk)`` for per-head patterns."""
        keep = self.mask_fn(tq, tk, device)
        qr = torch.arange(tq, device=device)[:, None]  # (Tq, 1)
        kr = torch.arange(tk, device=device)[None, :]  # (1, Tk)
        if self.per_head:
            h = torch.arange(self.n_heads, device=device)[:, None, None]  # (H, 1, 1)
            return keep(h, qr[None], kr[None]).expand(self.n_heads, tq, tk)
        return keep(torch.zeros((), dtype=torch.long, device=device), qr, kr).expand(tq, tk)

    def _causal(self, i: Tensor, j: Tensor, keep: Tensor) -> Tensor:
        return keep & (j <= i) if self.causal else keep


class SlidingWindow(Pattern):
    def __init__(self, window: int, causal: bool = False) -> None:
        super().__init__(causal)
        self.window = _positive("window", window)

    def bounds(self) -> tuple[int, int]:
        """Keys ``i - left .. i + right`` may be visible to query i."""
        return (self.window - 1, 0) if self.causal else (self.window // 2, self.window // 2)

    def keep_pos(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        d = i - j
        if self.causal:
            return (d >= 0) & (d < self.window)
        return d.abs() <= self.window // 2


class DilatedWindow(Pattern):
    def __init__(self, window: int, dilation: int | Sequence[int], causal: bool = False) -> None:
        super().__init__(causal)
        self.window = _positive("window", window)
        if isinstance(dilation, int):
            self.dilations = [_positive("dilation", dilation)]
            self.per_head = False
        else:
            self.dilations = [_positive("dilation", d) for d in dilation]
            if not self.dilations:
                raise ValueError("dilation=[] needs one value per head")
            self.per_head = True
        self.n_heads = len(self.dilations)
        self._table: Tensor | None = None

    def bounds(self, d: int) -> tuple[int, int]:
        return ((self.window - 1) * d, 0) if self.causal else ((self.window // 2) * d, (self.window // 2) * d)

    def _bind(self, tk: int, device: torch.device | None) -> None:
        self._table = torch.tensor(self.dilations, device=device)

    def keep_pos(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        d = self._table[h] if self.per_head else self.dilations[0]
        diff = i - j
        if self.causal:
            return (diff >= 0) & (diff < self.window * d) & (diff % d == 0)
        return (diff.abs() <= (self.window // 2) * d) & (diff % d == 0)


class GlobalWindow(SlidingWindow):
    bidirectional_only = True

    def __init__(self, window: int, global_positions: Sequence[int], causal: bool = False) -> None:
        super().__init__(window, causal)
        g = sorted(set(int(p) for p in global_positions))
        if g and g[0] < 0:
            raise ValueError(f"global_positions contains {g[0]}; positions must be >= 0")
        self.global_positions = g
        self._flags: Tensor | None = None

    def check(self, tq: int, tk: int) -> None:
        if tq > tk:
            raise ValueError(f"global_window needs at least as many keys as queries; got {tq} queries over {tk} keys")
        if self.global_positions and self.global_positions[-1] >= tk:
            raise ValueError(
                f"global position {self.global_positions[-1]} is outside a sequence of length {tk} (positions are 0-based)"
            )

    def _bind(self, tk: int, device: torch.device | None) -> None:
        flags = torch.zeros(tk, dtype=torch.bool, device=device)
        flags[self.global_positions] = True
        self._flags = flags

    def keep_pos(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        return super().keep_pos(h, i, j) | self._flags[i] | self._flags[j]


class Strided(Pattern):
    def __init__(self, stride: int, causal: bool = False) -> None:
        super().__init__(causal)
        self.stride = _positive("stride", stride)

    def local(self, i: Tensor, j: Tensor) -> Tensor:
        return self._causal(i, j, (i - j).abs() < self.stride)

    def keep_pos(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        return self._causal(i, j, ((i - j).abs() < self.stride) | ((i - j) % self.stride == 0))


class Fixed(Pattern):
    def __init__(self, stride: int, c: int, causal: bool = False) -> None:
        super().__init__(causal)
        self.stride = _positive("stride", stride)
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= stride:
            raise ValueError(f"c={c!r} must be an integer in 1..stride={stride}")
        self.c = c

    def keep_pos(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        l = self.stride
        return self._causal(i, j, (j // l == i // l) | (j % l >= l - self.c))


class BigBird(Pattern):
    bidirectional_only = True

    def __init__(
        self, block: int, window_blocks: int = 3, global_blocks: int = 2, random_blocks: int = 3, seed: int = 0, causal: bool = False
    ) -> None:
        super().__init__(causal)
        self.block = _positive("block", block)
        self.window_blocks = _positive("window_blocks", window_blocks)
        for name, value in (("global_blocks", global_blocks), ("random_blocks", random_blocks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be a non-negative integer")
        self.global_blocks, self.random_blocks, self.seed = global_blocks, random_blocks, int(seed)
        self._layout: Tensor | None = None

    def check(self, tq: int, tk: int) -> None:
        if tq > tk:
            raise ValueError(f"bigbird needs at least as many keys as queries; got {tq} queries over {tk} keys")

    def layout(self, n_blocks: int) -> Tensor:
        """The ``(n_blocks, n_blocks)`` block-level mask, True = the query block sees the key block."""
        idx = torch.arange(n_blocks)
        lay = (idx[:, None] - idx[None, :]).abs() <= self.window_blocks // 2
        lay |= idx[None, :] < self.global_blocks
        gen = torch.Generator().manual_seed(self.seed)
        for qb in range(n_blocks):
            free = (~lay[qb]).nonzero().flatten()
            if self.random_blocks and len(free):
                pick = free[torch.randperm(len(free), generator=gen)[: self.random_blocks]]
                lay[qb, pick] = True
        lay[: self.global_blocks] = True  # global query blocks see everything
        return lay

    def _bind(self, tk: int, device: torch.device | None) -> None:
        self._layout = self.layout(-(-tk // self.block)).to(device)

    def keep_pos(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        return self._layout[i // self.block, j // self.block]


# -- the dense mask builders: the public contract ---------------------------------------------
def sliding_window_mask(tq: int, tk: int, *, window: int, causal: bool = False, device: torch.device | None = None) -> Tensor:
    """``(Tq, Tk)`` sliding-window mask (see the module docstring for the definition)."""
    return SlidingWindow(window, causal).dense(tq, tk, device)


def dilated_window_mask(
    tq: int, tk: int, *, window: int, dilation: int | Sequence[int], causal: bool = False, device: torch.device | None = None
) -> Tensor:
    """``(Tq, Tk)`` dilated-window mask, or ``(H, Tq, Tk)`` when ``dilation`` lists one value per head."""
    p = DilatedWindow(window, dilation, causal)
    return p.dense(tq, tk, device)


def global_window_mask(
    t: int, *, window: int, global_positions: Sequence[int], device: torch.device | None = None
) -> Tensor:
    """``(T, T)`` Longformer mask: sliding window plus global rows and columns."""
    return GlobalWindow(window, global_positions).dense(t, t, device)


def strided_mask(tq: int, tk: int, *, stride: int, causal: bool = False, device: torch.device | None = None) -> Tensor:
    """``(Tq, Tk)`` Sparse Transformer strided mask."""
    return Strided(stride, causal).dense(tq, tk, device)


def fixed_mask(tq: int, tk: int, *, stride: int, c: int, causal: bool = False, device: torch.device | None = None) -> Tensor:
    """``(Tq, Tk)`` Sparse Transformer fixed mask."""
    return Fixed(stride, c, causal).dense(tq, tk, device)


def bigbird_mask(
    t: int,
    *,
    block: int,
    window_blocks: int = 3,
    global_blocks: int = 2,
    random_blocks: int = 3,
    seed: int = 0,
    device: torch.device | None = None,
) -> Tensor:
    """``(T, T)`` BigBird block-sparse mask for one seed."""
    return BigBird(block, window_blocks, global_blocks, random_blocks, seed).dense(t, t, device)
