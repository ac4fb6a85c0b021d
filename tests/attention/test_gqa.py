"""Grouped-query and multi-query attention (Ainslie et al. 2023; Shazeer 2019) against a per-head loop.

The reference computes each query head h with key/value head h // (H / G), softmax written out.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.attention import KVCache, MultiHeadAttention
from attnkit.attention.registry import build

D, H = 24, 6


def reference(mha: MultiHeadAttention, x: torch.Tensor, causal: bool, keep: torch.Tensor | None = None) -> torch.Tensor:
    b, t, _ = x.shape
    g, d = mha.n_kv_heads, mha.head_dim
    w = mha.qkv_proj.weight
    bias = mha.qkv_proj.bias if mha.qkv_proj.bias is not None else torch.zeros(w.shape[0], dtype=x.dtype)
    proj = x @ w.T + bias
    q, k, v = proj[..., : H * d], proj[..., H * d : (H + g) * d], proj[..., (H + g) * d :]
    heads = []
    for h in range(H):
        j = h // (H // g)
        qh, kh, vh = q[..., h * d : (h + 1) * d], k[..., j * d : (j + 1) * d], v[..., j * d : (j + 1) * d]
        s = qh @ kh.transpose(-1, -2) / math.sqrt(d)  # (B, T, T)
        allowed = torch.ones(t, t, dtype=torch.bool)
        if causal:
            allowed = torch.tril(allowed)
        allowed = allowed.expand(b, t, t)
        if keep is not None:
            allowed = allowed & keep[:, None, :]
        s = s.masked_fill(~allowed, float("-inf"))
        heads.append(torch.softmax(s, -1) @ vh)
    return mha.out_proj(torch.cat(heads, -1))


@pytest.mark.parametrize("g", [1, 2, 3, 6])
@pytest.mark.parametrize("causal", [False, True])
def test_grouped_heads_match_the_per_head_loop(g, causal) -> None:
    torch.manual_seed(g)
    mha = MultiHeadAttention(D, H, n_kv_heads=g).double().eval()
    assert mha.qkv_proj.weight.shape == ((H + 2 * g) * D // H, D)
    x = torch.randn(2, 7, D, dtype=torch.float64)
    out, _ = mha(x, causal=causal)
    torch.testing.assert_close(out, reference(mha, x, causal))
    keep = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out, w = mha(x, mask=keep[:, None, None, :], causal=causal, need_weights=True)
    torch.testing.assert_close(out[1, 2:], reference(mha, x, causal, keep)[1, 2:])
    assert w.shape == (2, H, 7, 7)


@pytest.mark.parametrize("kind", ["scaled_dot", "additive"])
def test_kernels_take_fewer_kv_heads(kind) -> None:
    """A kernel handed G key/value heads equals the same kernel handed them repeated to H."""
    torch.manual_seed(0)
    kernel = build(kind, head_dim=4, n_heads=H).double()
    q = torch.randn(2, H, 5, 4, dtype=torch.float64)
    k, v = torch.randn(2, 2, 5, 4, dtype=torch.float64), torch.randn(2, 2, 5, 4, dtype=torch.float64)
    expanded = kernel(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), causal=True)
    torch.testing.assert_close(kernel(q, k, v, causal=True), expanded)


def test_cache_holds_kv_heads_and_decoding_equals_the_full_pass() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(D, H, n_kv_heads=2, bias=False).double().eval()
    x = torch.randn(2, 6, D, dtype=torch.float64)
    full, _ = mha(x, causal=True)
    cache = KVCache(8)
    steps = [mha(x[:, :3], causal=True, cache=cache)[0]] + [mha(x[:, i : i + 1], causal=True, cache=cache)[0] for i in range(3, 6)]
    assert cache.k.shape == (2, 2, 8, D // H)
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_default_kv_heads_keep_the_layout_and_the_initial_weights() -> None:
    torch.manual_seed(0)
    a = MultiHeadAttention(D, H).state_dict()
    torch.manual_seed(0)
    b = MultiHeadAttention(D, H, n_kv_heads=H).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)
    assert a["qkv_proj.weight"].shape == (3 * D, D)


def test_biases_separately_and_bad_kv_heads() -> None:
    mha = MultiHeadAttention(D, H, n_kv_heads=2, bias=True, out_bias=False)
    assert mha.qkv_proj.bias is not None and mha.out_proj.bias is None
    with pytest.raises(ValueError, match="n_kv_heads=4"):
        MultiHeadAttention(D, H, n_kv_heads=4)
    cross = MultiHeadAttention(D, H, cross=True, n_kv_heads=3).double()
    out, _ = cross(torch.randn(1, 2, D, dtype=torch.float64), torch.randn(1, 5, D, dtype=torch.float64))
    assert out.shape == (1, 2, D)


CAUSAL_KINDS = ["scaled_dot", "dot", "additive", "relu", "sliding_window", "dilated_window", "strided", "fixed", "routing",
                "linear", "performer"]


@pytest.mark.parametrize("kind", CAUSAL_KINDS)
def test_every_causal_kernel_equals_attention_with_copied_key_value_heads(kind) -> None:
    """G shared key/value heads are H heads whose projections repeat each group's rows: the full pass and
    cached decoding (growing cache, or linear attention's recurrent state) of both agree."""
    from attnkit.attention.linear import LinearAttention, RecurrentCache

    params = {"window": 4} if "window" in kind else {"stride": 3} if kind == "strided" else {"stride": 3, "c": 1} if kind == "fixed" else {}
    torch.manual_seed(0)
    grouped = MultiHeadAttention(D, H, n_kv_heads=2, kind=kind, kernel_params=params).double().eval()
    full = MultiHeadAttention(D, H, kind=kind, kernel_params=params).double().eval()
    state = grouped.state_dict()
    d, g = D // H, 2
    rows = torch.arange(H * d)
    kv_rows = (rows // d // (H // g)) * d + rows % d  # the grouped row each full head's row copies
    for name in ("weight", "bias"):
        w = state[f"qkv_proj.{name}"]
        q, k, v = w[: H * d], w[H * d : (H + g) * d], w[(H + g) * d :]
        state[f"qkv_proj.{name}"] = torch.cat([q, k[kv_rows], v[kv_rows]])
    full.load_state_dict(state)
    x = torch.randn(2, 9, D, dtype=torch.float64)
    with torch.no_grad():
        expected, _ = full(x, causal=True)
        torch.testing.assert_close(grouped(x, causal=True)[0], expected)
        cache = RecurrentCache() if isinstance(grouped.kernel, LinearAttention) else KVCache(9)
        steps = [grouped(x[:, :5], causal=True, cache=cache)[0]] + [grouped(x[:, i : i + 1], causal=True, cache=cache)[0] for i in range(5, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), expected, atol=1e-6, rtol=1e-5)  # FAVOR+'s recurrent stabiliser differs
