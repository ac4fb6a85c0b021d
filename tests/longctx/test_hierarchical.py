"""Hierarchical attention against its definition: a dense masked softmax over the T keys followed by the blocks'
summaries (the mean of each block's valid keys, carrying the mean of their values), written here with loops."""

from __future__ import annotations

import pytest
import torch

import attnkit.attention as A
from attnkit.attention.hierarchical import HierarchicalAttention
from attnkit.errors import ConfigError


def reference(q, k, v, block: int, causal: bool, lengths: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys [k_1..k_T, kbar_1..kbar_C], values likewise, a (T, T + C) mask per row entry by entry.

    Returns the output and the weights over the T keys (a summary's weight shared equally by its valid keys)."""
    b, h, t, d = q.shape
    c = -(-t // block)
    lengths = lengths or [t] * b
    outs, weights = [], []
    for r in range(b):
        valid = [j < lengths[r] for j in range(t)]
        members = [[j for j in range(e * block, min(t, (e + 1) * block)) if valid[j]] for e in range(c)]
        k_bar = torch.stack([k[r, :, m].mean(-2) if m else torch.zeros_like(k[r, :, 0]) for m in members], dim=1)  # (H, C, D)
        v_bar = torch.stack([v[r, :, m].mean(-2) if m else torch.zeros_like(v[r, :, 0]) for m in members], dim=1)
        keys, values = torch.cat([k[r], k_bar], 1), torch.cat([v[r], v_bar], 1)
        allowed = torch.zeros(t, t + c, dtype=torch.bool)
        for i in range(t):
            for j in range(t):
                allowed[i, j] = valid[j] and i // block == j // block and (j <= i or not causal)
            for e in range(c):
                allowed[i, t + e] = bool(members[e]) and (e < i // block if causal else e != i // block)
        s = (q[r] @ keys.transpose(-1, -2) / d**0.5).masked_fill(~allowed, float("-inf"))
        w = torch.where(allowed.any(-1, keepdim=True), s.softmax(-1), torch.zeros_like(s))  # (H, T, T + C)
        outs.append(w @ values)
        spread = torch.zeros(h, t, t, dtype=q.dtype)
        for e, m in enumerate(members):
            for j in m:
                spread[:, :, j] = w[:, :, t + e] / len(m)
        weights.append(w[:, :, :t] + spread)
    return torch.stack(outs), torch.stack(weights)


CASES = [(12, 4, True), (12, 4, False), (11, 4, True), (10, 3, False), (5, 8, True), (9, 2, False)]


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("t,block,causal", CASES)
def test_hierarchical_against_its_definition(t: int, block: int, causal: bool, padded: bool) -> None:
    torch.manual_seed(t + block)
    kernel = A.get("hierarchical", block=block).double()
    b = 3
    lengths = [t, max(1, t - block - 1), 0] if padded else None  # a row ending mid-block and one with no valid key
    mask = None if lengths is None else (torch.arange(t) < torch.tensor(lengths)[:, None])[:, None, None, :]  # (B, 1, 1, T)
    q, k, v = (torch.randn(b, 2, t, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    g = torch.randn(b, 2, t, 4, dtype=torch.float64)
    out = kernel(q, k, v, mask=mask, causal=causal)  # the blocked path
    grads = torch.autograd.grad((out * g).sum(), (q, k, v))
    want, want_w = reference(q, k, v, block, causal, lengths)
    want_grads = torch.autograd.grad((want * g).sum(), (q, k, v))
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-10)
    for a, b_ in zip(grads, want_grads):
        torch.testing.assert_close(a, b_, atol=1e-12, rtol=1e-10)

    out_w, w = kernel(q, k, v, mask=mask, causal=causal, need_weights=True)  # the dense path
    torch.testing.assert_close(w, want_w.detach(), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(out_w, want.detach(), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(w @ v, out.detach(), atol=1e-12, rtol=1e-10)  # weights @ V reproduce the output
    sums = w.sum(-1)
    seen = torch.ones_like(sums, dtype=torch.bool) if lengths is None else (torch.tensor(lengths) > 0)[:, None, None].expand_as(sums)
    torch.testing.assert_close(sums[seen], torch.ones_like(sums[seen]))
    assert (sums[~seen] == 0).all() and (out[~seen] == 0).all()  # no valid key: zero output and weights
    if padded:
        assert (w[0, :, :, lengths[0]:] == 0).all() and (w[1, :, :, lengths[1]:] == 0).all()  # padded keys get no weight


def test_padded_keys_do_not_change_the_output() -> None:
    """Garbage in the padded keys and values leaves every output unchanged."""
    torch.manual_seed(0)
    kernel = HierarchicalAttention(block=4).double()
    q, k, v = (torch.randn(1, 2, 10, 4, dtype=torch.float64) for _ in range(3))
    mask = (torch.arange(10) < 7)[None, None, None, :]
    k2, v2 = k.clone(), v.clone()
    k2[..., 7:, :], v2[..., 7:, :] = 1e3, -1e3
    for causal in (False, True):
        torch.testing.assert_close(kernel(q, k2, v2, mask=mask, causal=causal), kernel(q, k, v, mask=mask, causal=causal))


def test_grouped_kv_and_half_precision() -> None:
    torch.manual_seed(1)
    kernel = HierarchicalAttention(block=3)
    q = torch.randn(2, 4, 8, 8)
    k, v = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    want = kernel(q, A.base.repeat_kv(k, 4), A.base.repeat_kv(v, 4), causal=True)
    torch.testing.assert_close(kernel(q, k, v, causal=True), want)
    half = kernel(q.bfloat16(), k.bfloat16(), v.bfloat16(), causal=True)
    assert half.dtype == torch.bfloat16 and (half.float() - want).abs().max() < 0.05


def test_cached_decoding_equals_the_full_sequence() -> None:
    """Tq != Tk: one query at a time over a cache whose mask marks the visible slots equals the causal row."""
    torch.manual_seed(2)
    kernel = HierarchicalAttention(block=3).double()
    t, slots = 8, 10
    q, k, v = (torch.randn(1, 2, t, 4, dtype=torch.float64) for _ in range(3))
    full = kernel(q, k, v, causal=True)
    kc, vc = (torch.nn.functional.pad(x, (0, 0, 0, slots - t), value=7.0) for x in (k, v))  # unwritten slots hold garbage
    for i in range(t):
        mask = (torch.arange(slots) <= i)[None, None, None, :]  # (1, 1, 1, slots)
        torch.testing.assert_close(kernel(q[:, :, i : i + 1], kc, vc, mask=mask), full[:, :, i : i + 1])
    prefill = (torch.arange(slots)[None, :] <= torch.arange(t)[:, None])[None, None]  # (1, 1, T, slots)
    torch.testing.assert_close(kernel(q, kc, vc, mask=prefill), full)


def test_registry_params_and_refusals() -> None:
    assert "hierarchical" in A.names()
    assert A.get("hierarchical", block=16).block == 16
    with pytest.raises(ConfigError, match="block"):
        A.get("hierarchical", block=0)
    with pytest.raises(ConfigError, match="'window'"):
        A.get("hierarchical", window=3)
    kernel = A.get("hierarchical", block=2)
    q = torch.randn(1, 1, 4, 4)
    with pytest.raises(ValueError, match="hierarchical.*score bias"):
        kernel(q, q, q, bias=torch.zeros(4, 4))
    with pytest.raises(TypeError, match="boolean"):
        kernel(q, q, q, mask=torch.zeros(4, 4))
