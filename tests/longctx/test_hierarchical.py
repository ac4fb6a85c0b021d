"""Hierarchical attention against its definition: a dense masked softmax over the T keys followed by the blocks'
mean keys (carrying their mean values)."""

from __future__ import annotations

import pytest
import torch

from attnkit.attention.hierarchical import HierarchicalAttention


def reference(q, k, v, block: int, causal: bool) -> torch.Tensor:
    """Keys [k_1..k_T, kbar_1..kbar_C], values likewise, and a (T, T + C) mask written from the definition."""
    b, h, t, d = q.shape
    c = -(-t // block)
    k_bar = torch.stack([k[:, :, i * block : (i + 1) * block].mean(-2) for i in range(c)], dim=2)  # (B, H, C, D)
    v_bar = torch.stack([v[:, :, i * block : (i + 1) * block].mean(-2) for i in range(c)], dim=2)
    keys, values = torch.cat([k, k_bar], 2), torch.cat([v, v_bar], 2)
    allowed = torch.zeros(t, t + c, dtype=torch.bool)
    for i in range(t):
        for j in range(t):
            allowed[i, j] = i // block == j // block and (j <= i or not causal)
        for e in range(c):
            allowed[i, t + e] = e < i // block if causal else e != i // block
    s = q @ keys.transpose(-1, -2) / d**0.5
    return s.masked_fill(~allowed, float("-inf")).softmax(-1) @ values


@pytest.mark.parametrize("t,block,causal", [(12, 4, True), (12, 4, False), (11, 4, True), (10, 3, False), (5, 8, True)])
def test_hierarchical_against_its_definition(t: int, block: int, causal: bool) -> None:
    torch.manual_seed(t + block)
    kernel = HierarchicalAttention(block=block).double()
    q, k, v = (torch.randn(2, 2, t, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    g = torch.randn(2, 2, t, 4, dtype=torch.float64)
    out = kernel(q, k, v, causal=causal)
    grads = torch.autograd.grad((out * g).sum(), (q, k, v))
    want = reference(q, k, v, block, causal)
    want_grads = torch.autograd.grad((want * g).sum(), (q, k, v))
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-10)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_hierarchical_refuses_masks_and_caches() -> None:
    kernel = HierarchicalAttention(block=2)
    q = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="no mask"):
        kernel(q, q, q, mask=torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="self-attention"):
        kernel(q[:, :, :1], q, q)
