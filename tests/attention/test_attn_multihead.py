"""MultiHeadAttention against torch.nn.MultiheadAttention with copied weights, and its KV caches.

torch's ``in_proj_weight`` stacks W^Q, W^K, W^V row-wise, the layout of attnkit's fused
``qkv_proj`` (self-attention) and of ``q_proj`` + ``kv_proj`` (cross-attention).
torch masks say True = *blocked*; attnkit's say True = *may attend*.
"""

from __future__ import annotations


import pytest
import torch
from torch import Tensor, nn

from attnkit.attention import KVCache, MultiHeadAttention, StaticKV, padding_mask

D_MODEL, N_HEADS = 16, 4



def pair(cross: bool, seed: int = 0) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(D_MODEL, N_HEADS, batch_first=True, dtype=torch.float64)
    nn.init.normal_(theirs.in_proj_bias)
    nn.init.normal_(theirs.out_proj.bias)
    mine = MultiHeadAttention(D_MODEL, N_HEADS, cross=cross).double()
    with torch.no_grad():
        if cross:
            mine.q_proj.weight.copy_(theirs.in_proj_weight[:D_MODEL])
            mine.q_proj.bias.copy_(theirs.in_proj_bias[:D_MODEL])
            mine.kv_proj.weight.copy_(theirs.in_proj_weight[D_MODEL:])
            mine.kv_proj.bias.copy_(theirs.in_proj_bias[D_MODEL:])
        else:
            mine.qkv_proj.weight.copy_(theirs.in_proj_weight)
            mine.qkv_proj.bias.copy_(theirs.in_proj_bias)
        mine.out_proj.load_state_dict(theirs.out_proj.state_dict())
    return mine.eval(), theirs.eval()


def randn(*shape: int, seed: int = 1) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


LENGTHS = torch.tensor([5, 3, 1])  # (B,): batch rows padded to T=5


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_self_attention_matches_torch(causal: bool, padded: bool) -> None:
    mine, theirs = pair(cross=False)
    x = randn(3, 5, D_MODEL)
    mask = padding_mask(LENGTHS, max_len=5) if padded else None  # (B, 1, 1, T)
    out, w = mine(x, mask=mask, causal=causal, need_weights=True)
    ref, ref_w = theirs(
        x, x, x,
        key_padding_mask=~mask[:, 0, 0] if padded else None,
        attn_mask=torch.ones(5, 5, dtype=torch.bool).triu(1) if causal else None,
        need_weights=True,
        average_attn_weights=True,
    )
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(w.mean(dim=1), ref_w)  # torch averages the heads
    fast, none = mine(x, mask=mask, causal=causal)
    assert none is None
    torch.testing.assert_close(fast, out)


def test_self_attention_per_head_weights_match_torch() -> None:
    mine, theirs = pair(cross=False)
    x = randn(2, 4, D_MODEL)
    _, w = mine(x, need_weights=True)
    _, ref_w = theirs(x, x, x, need_weights=True, average_attn_weights=False)
    assert w.shape == (2, N_HEADS, 4, 4)
    torch.testing.assert_close(w, ref_w)


@pytest.mark.parametrize("padded", [False, True])
def test_cross_attention_matches_torch(padded: bool) -> None:
    mine, theirs = pair(cross=True)
    x, memory = randn(3, 4, D_MODEL, seed=2), randn(3, 5, D_MODEL, seed=3)  # Tq=4 != Tk=5
    mask = padding_mask(LENGTHS, max_len=5) if padded else None
    out, w = mine(x, memory, mask=mask, need_weights=True)
    ref, ref_w = theirs(x, memory, memory, key_padding_mask=~mask[:, 0, 0] if padded else None)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(w.mean(dim=1), ref_w)


def test_cross_attention_with_a_narrower_context_matches_torch() -> None:
    """d_context != d_model: torch keeps separate k/v projections, attnkit fuses them in kv_proj."""
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(D_MODEL, N_HEADS, batch_first=True, kdim=6, vdim=6, dtype=torch.float64).eval()
    nn.init.normal_(theirs.in_proj_bias)
    mine = MultiHeadAttention(D_MODEL, N_HEADS, cross=True, d_context=6).double().eval()
    with torch.no_grad():
        mine.q_proj.weight.copy_(theirs.q_proj_weight)
        mine.kv_proj.weight.copy_(torch.cat([theirs.k_proj_weight, theirs.v_proj_weight]))
        mine.q_proj.bias.copy_(theirs.in_proj_bias[:D_MODEL])
        mine.kv_proj.bias.copy_(theirs.in_proj_bias[D_MODEL:])
        mine.out_proj.load_state_dict(theirs.out_proj.state_dict())
    x, memory = randn(2, 3, D_MODEL, seed=6), randn(2, 4, 6, seed=7)
    torch.testing.assert_close(mine(x, memory)[0], theirs(x, memory, memory)[0])


def test_cross_attention_needs_a_context() -> None:
    mine, _ = pair(cross=True)
    with pytest.raises(ValueError, match="context"):
        mine(randn(1, 2, D_MODEL))


def test_d_model_not_divisible_by_heads_is_refused() -> None:
    with pytest.raises(ValueError, match="n_heads=3"):
        MultiHeadAttention(16, 3)


def test_kernel_kind_and_params_reach_the_kernel() -> None:
    mha = MultiHeadAttention(16, 4, kind="additive", kernel_params={"attn_dim": 5})
    assert mha.kernel.kind == "additive" and mha.kernel.w_q.weight.shape == (5, 4)


# -- KV caches -----------------------------------------------------------------------------
@pytest.mark.parametrize("chunks", [[1] * 6, [2, 1, 3], [6]])
def test_kv_cache_matches_the_full_causal_pass(chunks: list[int]) -> None:
    mine, _ = pair(cross=False)
    x = randn(2, 6, D_MODEL)
    full, _ = mine(x, causal=True)
    cache = KVCache(max_len=8)
    outs, start = [], 0
    for n in chunks:
        out, _ = mine(x[:, start : start + n], causal=True, cache=cache)  # Tq = n over Tk = start + n keys
        outs.append(out)
        start += n
    assert cache.length == 6
    torch.testing.assert_close(torch.cat(outs, dim=1), full)


def test_kv_cache_with_padding_mask_matches_full_pass() -> None:
    mine, _ = pair(cross=False)
    x = randn(3, 5, D_MODEL)
    keep = padding_mask(LENGTHS, max_len=5)  # (B, 1, 1, 5)
    full, _ = mine(x, mask=keep, causal=True)
    cache = KVCache(max_len=5)
    steps = [mine(x[:, t : t + 1], mask=keep[..., : t + 1], causal=True, cache=cache)[0] for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)


def test_kv_cache_overflow_is_a_clear_error() -> None:
    mine, _ = pair(cross=False)
    cache = KVCache(max_len=2)
    mine(randn(1, 2, D_MODEL), causal=True, cache=cache)
    with pytest.raises(ValueError, match="overflow"):
        mine(randn(1, 1, D_MODEL), causal=True, cache=cache)
    with pytest.raises(ValueError, match="max_len"):
        KVCache(0)


def test_kv_cache_reorder_follows_the_batch_index() -> None:
    mine, _ = pair(cross=False)
    x = randn(3, 4, D_MODEL)
    full, _ = mine(x[[2, 0]], causal=True)
    cache = KVCache(max_len=4)
    mine(x[:, :2], causal=True, cache=cache)
    cache.reorder(torch.tensor([2, 0]))
    out, _ = mine(x[[2, 0], 2:], causal=True, cache=cache)
    torch.testing.assert_close(out, full[:, 2:])


def test_kv_cache_reorder_in_place_with_as_many_rows() -> None:
    """A beam step (same row count): filled positions follow the index, buffers are reused."""
    mine, _ = pair(cross=False)
    x = randn(3, 4, D_MODEL, seed=7)
    full, _ = mine(x[[1, 1, 0]], causal=True)
    cache = KVCache(max_len=6)
    mine(x[:, :2], causal=True, cache=cache)
    buffer = cache.k
    cache.reorder(torch.tensor([1, 1, 0]))
    assert cache.k is buffer and cache.k.shape[2] == 6
    out, _ = mine(x[[1, 1, 0], 2:], causal=True, cache=cache)
    torch.testing.assert_close(out, full[:, 2:])


def test_layer_cache_reorder_can_leave_cross_attention_alone() -> None:
    from attnkit.attention.cache import LayerCache

    c = LayerCache(max_len=4)
    c.cross_attn.set(torch.arange(2.0).view(2, 1, 1, 1), torch.arange(2.0).view(2, 1, 1, 1))
    before = c.cross_attn.k
    c.reorder(torch.tensor([1, 0]), cross=False)
    assert c.cross_attn.k is before
    c.reorder(torch.tensor([1, 0]))
    assert c.cross_attn.k.flatten().tolist() == [1.0, 0.0]


@pytest.mark.parametrize("index", [[1, 1, 0], [2, 0]])  # a beam step (same rows, in place), then fewer rows
def test_stacked_caches_reorder_like_separate_ones(index: list[int]) -> None:
    """make_caches keeps every layer's keys and values in one KVStack; reorder_caches moves them
    all at once, with the results of reordering separate per-layer caches."""
    from attnkit.attention.cache import KVCache, make_caches, reorder_caches

    g = torch.Generator().manual_seed(0)
    steps = [(torch.randn(3, 2, 2, 4, generator=g), torch.randn(3, 2, 2, 4, generator=g)) for _ in range(3)]
    stacked, separate = make_caches(3, max_len=6), [KVCache(6) for _ in range(3)]
    for layer, (k, v) in enumerate(steps):
        stacked[layer].self_attn.append(k, v)
        separate[layer].append(k, v)
    stack = stacked[0].self_attn.stack
    assert stack is not None and stacked[2].self_attn.k.data_ptr() == stack.buf[2, 0].data_ptr()
    buffer = stack.buf
    idx = torch.tensor(index)
    reorder_caches(stacked, idx)
    for c in separate:
        c.reorder(idx)
    assert (stack.buf is buffer) == (len(index) == 3)  # in place for a beam step
    for layer, (k, v) in enumerate(steps):
        new_k, new_v = k[idx] + 1, v[idx] - 1
        got = stacked[layer].self_attn.append(new_k, new_v)
        want = separate[layer].append(new_k, new_v)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


def test_a_cache_reordered_alone_leaves_its_stack() -> None:
    from attnkit.attention.cache import make_caches, reorder_caches

    caches = make_caches(2, max_len=4)
    rows = torch.arange(4.0).view(2, 1, 2, 1)  # batch row 0: 0, 1; row 1: 2, 3
    for c in caches:
        c.self_attn.append(rows, rows)
    stack = caches[0].self_attn.stack
    caches[0].reorder(torch.tensor([1, 0]))  # one layer on its own: buffers of its own from now on
    assert caches[0].self_attn.stack is None and caches[1].self_attn.stack is stack
    assert caches[0].self_attn.k.data_ptr() != stack.buf[0, 0].data_ptr()
    assert stack.buf[0, 0, :, :, :2].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]  # the stack untouched
    reorder_caches(caches, torch.tensor([1, 0]))  # no longer one stack: layer by layer
    assert caches[0].self_attn.k[:, :, :2].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]  # swapped twice
    assert caches[1].self_attn.k[:, :, :2].flatten().tolist() == [2.0, 3.0, 0.0, 1.0]


def test_static_kv_is_filled_once_and_reused() -> None:
    mine, _ = pair(cross=True)
    x, memory = randn(2, 3, D_MODEL, seed=4), randn(2, 5, D_MODEL, seed=5)
    full, _ = mine(x, memory)
    cache = StaticKV()
    assert not cache.filled
    first, _ = mine(x[:, :1], memory, cache=cache)
    assert cache.filled
    k = cache.k
    rest = [mine(x[:, t : t + 1], None, cache=cache)[0] for t in (1, 2)]  # no context needed any more
    assert cache.k is k
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full)
