"""Packed projections split into heads, with a backward that writes one packed gradient.

Self-attention projects Q, K and V with one matrix (section 3.2.2), so its output
``(B, T, 3 * d_model)`` holds the three tensors side by side. Viewed as ``(B, T, 3, H, d_k)`` and
permuted, it gives the three ``(B, H, T, d_k)`` head tensors without a copy. Through autograd's
own view operations, the backward then stacks the three gradients as ``(3, B, H, T, d_k)`` (a
copy) and copies again to get back the projection's ``(B, T, 3 * d_model)`` layout.

:func:`packed_heads` does the same split as one autograd Function whose backward builds the
``(B, T, n, H, d_k)`` gradient directly: one copy in general, and none when the attention
kernel's backward already wrote the three gradients into one buffer of that layout. SDPA's
memory-efficient kernel does this when its Q, K and V share storage.
"""

from __future__ import annotations

import torch
from torch import Tensor


def packed_view(grads: tuple[Tensor, ...], shape: tuple[int, ...]) -> Tensor | None:
    """The ``(B, T, n, H, D)`` tensor whose ``n`` head slices ``grads`` are, if they are such
    slices of one contiguous buffer (then no copy is needed); otherwise ``None``."""
    b, t, n, h, d = shape
    g0 = grads[0]
    head_strides = (t * n * h * d, d, n * h * d, 1)  # slice i of (B, T, n, H, D), seen as (B, H, T, D)
    step = h * d * g0.element_size()
    storage = g0.untyped_storage().data_ptr()
    for i, g in enumerate(grads):
        if (
            g.dtype != g0.dtype
            or g.shape != (b, h, t, d)
            or g.stride() != head_strides
            or g.untyped_storage().data_ptr() != storage
            or g.data_ptr() != g0.data_ptr() + i * step
        ):
            return None
    return g0.as_strided(shape, (t * n * h * d, n * h * d, h * d, d, 1))


class _PackedHeads(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> tuple[Tensor, ...]:  # x: (B, T, n, H, D)
        ctx.shape = tuple(x.shape)
        return tuple(x.permute(2, 0, 3, 1, 4).unbind(0))  # n x (B, H, T, D), views of x

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> Tensor:
        b, t, n, h, d = ctx.shape
        if any(g is None for g in grads):  # a head tensor that did not reach the loss
            like = next(g for g in grads if g is not None)
            grads = tuple(torch.zeros_like(like) if g is None else g for g in grads)
        packed = packed_view(grads, ctx.shape)
        if packed is None:
            packed = torch.stack([g.transpose(1, 2) for g in grads], dim=2)  # (B, T, n, H, D): one copy
        return packed


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
