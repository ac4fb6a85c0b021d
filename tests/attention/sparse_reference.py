"""Literal per-(i, j) predicates of the sparse patterns, copied from the definitions in issue 6.

Written with plain Python integers and loops, sharing nothing with
``attnkit.attention.patterns``; the tests build dense masks from these and compare.
Query row r over Tk keys sits at position i = Tk - Tq + r (bottom-right aligned).
"""

from __future__ import annotations

import torch
from torch import Tensor


def sliding(i: int, j: int, *, window: int, causal: bool = False) -> bool:
    if causal:
        return 0 <= i - j < window
    return abs(i - j) <= window // 2


def dilated(i: int, j: int, *, window: int, dilation: int, causal: bool = False) -> bool:
    if causal:
        return 0 <= i - j < window * dilation and (i - j) % dilation == 0
    return abs(i - j) <= (window // 2) * dilation and (i - j) % dilation == 0


def global_window(i: int, j: int, *, window: int, global_positions: list[int]) -> bool:
    return sliding(i, j, window=window) or i in global_positions or j in global_positions


def strided(i: int, j: int, *, stride: int, causal: bool = False) -> bool:
    ok = abs(i - j) < stride or (i - j) % stride == 0
    return ok and (j <= i or not causal)


def fixed(i: int, j: int, *, stride: int, c: int, causal: bool = False) -> bool:
    ok = j // stride == i // stride or j % stride >= stride - c
    return ok and (j <= i or not causal)


def bigbird_blocks(n_blocks: int, *, window_blocks: int, global_blocks: int) -> list[set[int]]:
    """For each query block, the key blocks it sees besides its random ones (window and global);
    the random draw is seeded inside the kernel, so the tests check its invariants instead."""
    out = []
    for qb in range(n_blocks):
        if qb < global_blocks:
            out.append(set(range(n_blocks)))
            continue
        out.append({kb for kb in range(n_blocks) if abs(qb - kb) <= window_blocks // 2 or kb < global_blocks})
    return out


def dense(pred, tq: int, tk: int, **params) -> Tensor:
    """``(Tq, Tk)`` boolean mask from a predicate, entry by entry."""
    o = tk - tq
    return torch.tensor([[bool(pred(o + r, j, **params)) for j in range(tk)] for r in range(tq)], dtype=torch.bool).reshape(tq, tk)
