"""Rows moved by a permutation, or a partial one, whose gradient moves back by the inverse gather.

A gather's own backward adds the output gradient into the input's rows with atomic additions (a
scatter-add into zeros). When no input row reaches two output rows, the gradient of input row ``i``
is simply the output gradient's row that took it: one more gather, by the inverse index. Reformer's
bucket sort (:mod:`attnkit.attention.lsh`) and the Switch layer's dispatch to experts
(:mod:`attnkit.layers.moe`) move rows this way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def inverse_index(index: Tensor, size: int) -> Tensor:
    """The inverse of ``index`` along its last axis, by a scatter (no second sort).

    ``index: (..., K)`` holds distinct targets in ``[0, size)``, or ``size`` for a row that goes nowhere; the result
    ``(..., size)`` holds the source of each target, ``K`` where no row goes. For a permutation (``K == size``, every
    target taken) it is the inverse permutation.
    """
    k = index.shape[-1]
    source = torch.full((*index.shape[:-1], size + 1), k, dtype=index.dtype, device=index.device)
    rows = torch.arange(k, dtype=index.dtype, device=index.device).expand_as(index)
    return source.scatter_(-1, index, rows)[..., :size]  # target ``size``: the rows that go nowhere


class GatherRows(torch.autograd.Function):
    """``x``'s rows (axis -2) in the order ``to``; the gradient gathered back by ``back``, the inverse index.

    ``x: (..., T, E)``, ``to: (..., T')`` with values in ``[0, T]`` (``T``: a zero row, with ``padded``), ``back: (..., T)``
    with values in ``[0, T']`` (``T'``: the row went nowhere, its gradient is zero). Without ``padded`` every index must
    name a row.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, to: Tensor, back: Tensor, padded: bool = False) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(back)
        ctx.padded = padded
        return _gather(x, to, padded)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (back,) = ctx.saved_tensors
        return _gather(grad, back, ctx.padded), None, None, None


def _gather(x: Tensor, index: Tensor, padded: bool) -> Tensor:
    """Rows ``index`` of ``x`` along axis -2, a zero row appended first where ``padded``."""
    if padded:
        x = torch.cat([x, x.new_zeros(*x.shape[:-2], 1, x.shape[-1])], dim=-2)
    return x.gather(-2, index[..., None].expand(*index.shape, x.shape[-1]))


def gather_rows(x: Tensor, to: Tensor, back: Tensor, padded: bool = False) -> Tensor:
    """:class:`GatherRows` (``x``'s rows in the order ``to``, the gradient gathered back by ``back``)."""
    return GatherRows.apply(x, to, back, padded)
