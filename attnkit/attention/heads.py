"""Packed projections split into heads, with a backward that writes one packed gradient.

Self-attention projects Q, K and V with one matrix (section 3.2.2), so its output
``(B, T, 3 * d_model)`` holds the three tensors side by side. Viewed as ``(B, T, 3, H, d_k)`` and
permuted, it gives the three ``(B, H, T, d_k)`` head tensors without a copy. Through autograd's
own view operations, the backward then stacks the three gradients as ``(3, B, H, T, d_k)`` (one
copy) and copies again to get back the projection's ``(B, T, 3 * d_model)`` layout.

:func:`packed_heads` does the same split as one autograd Function whose backward stacks the
gradients straight into the ``(B, T, n, H, d_k)`` layout: one copy instead of two.
"""

from __future__ import annotations

import torch
from torch import Tensor


class _PackedHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:  # x: (B, T, n, H, D)
        return tuple(x.permute(2, 0, 3, 1, 4).unbind(0))  # n x (B, H, T, D), views of x

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> Tensor:
        if any(g is None for g in grads):  # a head tensor that did not reach the loss
            like = next(g for g in grads if g is not None)
            grads = tuple(torch.zeros_like(like) if g is None else g for g in grads)
        return torch.stack([g.transpose(1, 2) for g in grads], dim=2)  # (B, T, n, H, D): one copy


def packed_heads(x: Tensor, n: int, n_heads: int) -> tuple[Tensor, ...]:
    """``n`` packed projections ``x: (B, T, n * d_model)`` as ``n`` views ``(B, H, T, d_k)``.

    Where autograd records the call, the backward returns the projection's gradient in its own
    layout (see the module). Without autograd, the split is three view operations.
    """
    b, t, width = x.shape
    x5 = x.view(b, t, n, n_heads, width // (n * n_heads))  # (B, T, n, H, d_k)
    if x.requires_grad and torch.is_grad_enabled():
        return _PackedHeads.apply(x5)
    return x5.permute(2, 0, 3, 1, 4).unbind(0)
