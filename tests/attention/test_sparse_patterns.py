"""Sparse attention patterns: mask builders against the literal definitions, kernels against dense attention.

* Each mask builder equals the per-(i, j) predicate written out in ``sparse_reference``.
* Each kernel's chunked path (and its ``need_weights`` reference path) equals dense softmax
  attention with the same boolean mask, computed here with ``torch.softmax``, in float32 to
  1e-5 for outputs and gradients, over lengths that are not multiples of the chunk or block,
  with key padding, causal and bidirectional.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import attnkit.attention as A
import sparse_reference as ref
from attnkit.attention import patterns as P


# -- mask builders against the literal predicates ------------------------------------------------
LENGTHS = [(1, 1), (5, 5), (13, 13), (3, 13), (1, 13), (16, 16)]


@pytest.mark.parametrize("tq,tk", LENGTHS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [1, 2, 3, 4, 7, 40])
def test_sliding_window_mask(tq: int, tk: int, causal: bool, window: int) -> None:
    got = P.sliding_window_mask(tq, tk, window=window, causal=causal)
    assert torch.equal(got, ref.dense(ref.sliding, tq, tk, window=window, causal=causal))


@pytest.mark.parametrize("tq,tk", LENGTHS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window,dilation", [(1, 2), (3, 2), (4, 3), (5, 1), (2, 7)])
def test_dilated_window_mask(tq: int, tk: int, causal: bool, window: int, dilation: int) -> None:
    got = P.dilated_window_mask(tq, tk, window=window, dilation=dilation, causal=causal)
    assert torch.equal(got, ref.dense(ref.dilated, tq, tk, window=window, dilation=dilation, causal=causal))


def test_dilated_window_mask_per_head() -> None:
    got = P.dilated_window_mask(11, 11, window=4, dilation=[1, 2, 3])
    assert got.shape == (3, 11, 11)
    for h, d in enumerate([1, 2, 3]):
        assert torch.equal(got[h], ref.dense(ref.dilated, 11, 11, window=4, dilation=d))


@pytest.mark.parametrize("t", [1, 6, 17])
@pytest.mark.parametrize("window", [1, 3, 6])
@pytest.mark.parametrize("global_positions", [[], [0], [0, 5], [2, 3, 4]])
def test_global_window_mask(t: int, window: int, global_positions: list[int]) -> None:
    g = [p for p in global_positions if p < t]
    got = P.global_window_mask(t, window=window, global_positions=g)
    assert torch.equal(got, ref.dense(ref.global_window, t, t, window=window, global_positions=g))


@pytest.mark.parametrize("tq,tk", LENGTHS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("stride", [1, 2, 3, 5])
def test_strided_mask(tq: int, tk: int, causal: bool, stride: int) -> None:
    got = P.strided_mask(tq, tk, stride=stride, causal=causal)
    assert torch.equal(got, ref.dense(ref.strided, tq, tk, stride=stride, causal=causal))


@pytest.mark.parametrize("tq,tk", LENGTHS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("stride,c", [(1, 1), (4, 1), (4, 2), (5, 5), (3, 2)])
def test_fixed_mask(tq: int, tk: int, causal: bool, stride: int, c: int) -> None:
    got = P.fixed_mask(tq, tk, stride=stride, c=c, causal=causal)
    assert torch.equal(got, ref.dense(ref.fixed, tq, tk, stride=stride, c=c, causal=causal))


@pytest.mark.parametrize("t,block,random_blocks", [(64, 4, 2), (61, 4, 3), (30, 7, 1), (200, 8, 3), (5, 8, 3)])
def test_bigbird_mask(t: int, block: int, random_blocks: int) -> None:
    """Window and global blocks exactly as defined; r random blocks from the rest (all of them
    where fewer remain); the token mask is the block layout expanded; same seed, same mask."""
    n = -(-t // block)
    got = P.bigbird_mask(t, block=block, random_blocks=random_blocks, seed=7)
    assert torch.equal(got, P.bigbird_mask(t, block=block, random_blocks=random_blocks, seed=7))
    fixed_part = ref.bigbird_blocks(n, window_blocks=3, global_blocks=2)
    layout = [{j // block for j in range(t) if got[qb * block, j]} for qb in range(n)]
    for qb in range(n):
        assert fixed_part[qb] <= layout[qb]
        if qb >= 2:
            extra = layout[qb] - fixed_part[qb]
            assert len(extra) == min(random_blocks, n - len(fixed_part[qb]))
    for i in range(t):
        for j in range(t):
            assert bool(got[i, j]) == (j // block in layout[i // block])


def test_bigbird_is_sparse_at_every_length_and_seeded() -> None:
    """Never full attention behind the user's back: HF's BigBird switches to full attention
    below (5 + 2 r) * block = 704 tokens for block 64, r = 3; here each non-global query block
    sees its window and global blocks plus exactly 3 random blocks, fewer than all."""
    for t in (576, 640, 700, 704, 1024):
        m = P.bigbird_mask(t, block=64, random_blocks=3, seed=0)
        n = -(-t // 64)
        seen = m[::64].reshape(n, n, 64)[..., 0] if t % 64 == 0 else m[::64][:, ::64]  # (query block, key block)
        fixed_part = ref.bigbird_blocks(n, window_blocks=3, global_blocks=2)
        for qb in range(2, n):
            assert int(seen[qb].sum()) == len(fixed_part[qb]) + 3 < n, (t, qb)
    assert not torch.equal(P.bigbird_mask(512, block=32, seed=0), P.bigbird_mask(512, block=32, seed=1))


# -- kernels against dense attention with the same mask -------------------------------------------
def dense_attention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    """softmax(QK^T / sqrt(d)) V over ``allowed``; rows with no allowed key are zero."""
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed, float("-inf"))
    w = torch.softmax(s, dim=-1)
    w = torch.where(allowed.any(-1, keepdim=True), w, torch.zeros_like(w))
    return w @ v


KERNELS = [
    ("sliding_window", dict(window=5), ref.sliding, dict(window=5)),
    ("sliding_window", dict(window=8), ref.sliding, dict(window=8)),
    ("dilated_window", dict(window=4, dilation=3), ref.dilated, dict(window=4, dilation=3)),
    ("strided", dict(stride=4), ref.strided, dict(stride=4)),
    ("fixed", dict(stride=5, c=2), ref.fixed, dict(stride=5, c=2)),
    ("global_window", dict(window=4, global_positions=[0, 9]), ref.global_window, dict(window=4, global_positions=[0, 9])),
]
CASES = [(23, 23, 0), (31, 31, 1), (7, 31, 2), (1, 30, 3), (17, 17, 4), (40, 40, 5)]


def _inputs(b: int, h: int, tq: int, tk: int, seed: int) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, tq, 8, generator=gen, requires_grad=True)
    k = torch.randn(b, h, tk, 8, generator=gen, requires_grad=True)
    v = torch.randn(b, h, tk, 6, generator=gen, requires_grad=True)
    g = torch.randn(b, h, tq, 6, generator=gen)
    return q, k, v, g


def _grads(out: Tensor, g: Tensor, *xs: Tensor) -> tuple[Tensor, ...]:
    return torch.autograd.grad(out, xs, g)


@pytest.mark.parametrize("tq,tk,seed", CASES)
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("kind,params,pred,pred_params", KERNELS, ids=[f"{k[0]}-{i}" for i, k in enumerate(KERNELS)])
def test_kernel_equals_dense_attention_with_its_mask(kind, params, pred, pred_params, causal, padding, tq, tk, seed) -> None:
    if kind == "global_window":
        if causal:
            with pytest.raises(ValueError, match="cannot be causal"):
                A.get(kind, **params)(*_inputs(1, 1, tq, tk, seed)[:3], causal=True)
            return
        pred_params = dict(pred_params, global_positions=[p for p in pred_params["global_positions"] if p < tk])
        params = dict(params, global_positions=pred_params["global_positions"])
    q, k, v, g = _inputs(2, 3, tq, tk, seed)
    allowed = ref.dense(pred, tq, tk, **pred_params, **({"causal": True} if causal else {}))  # (Tq, Tk)
    mask = None
    if padding:
        lengths = [tk, max(1, tk - 5)]
        mask = torch.tensor([[j < n for j in range(tk)] for n in lengths])[:, None, None, :]  # (B, 1, 1, Tk)
        allowed = allowed & mask
    expected = dense_attention(q, k, v, allowed)
    expected_grads = _grads(expected, g, q, k, v)
    for chunk in (4, 7, 256):
        kernel = A.get(kind, **params, chunk=chunk, backend="chunked")
        out = kernel(q, k, v, mask=mask, causal=causal)
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
        for got, want in zip(_grads(out, g, q, k, v), expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    out_w, w = A.get(kind, **params)(q, k, v, mask=mask, causal=causal, need_weights=True)
    torch.testing.assert_close(out_w, expected, rtol=1e-5, atol=1e-5)
    assert (w[..., ~allowed.expand_as(w)] == 0).all()


@pytest.mark.parametrize("t,seed", [(64, 0), (61, 1), (100, 2), (9, 3)])
@pytest.mark.parametrize("padding", [False, True])
def test_bigbird_equals_dense_attention_with_its_mask(t: int, seed: int, padding: bool) -> None:
    kernel = A.get("bigbird", block=8, random_blocks=2, seed=seed, backend="chunked")
    q, k, v, g = _inputs(2, 2, t, t, seed)
    allowed = P.bigbird_mask(t, block=8, random_blocks=2, seed=seed)
    mask = None
    if padding:
        mask = torch.tensor([[j < n for j in range(t)] for n in (t, t // 2)])[:, None, None, :]
        allowed = allowed & mask
    expected = dense_attention(q, k, v, allowed)
    out = kernel(q, k, v, mask=mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(out, g, q, k, v), _grads(expected, g, q, k, v)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_dilated_window_per_head(causal: bool) -> None:
    q, k, v, g = _inputs(2, 3, 29, 29, 0)
    kernel = A.get("dilated_window", window=4, dilation=[1, 2, 3], chunk=5, backend="chunked")
    allowed = torch.stack([ref.dense(ref.dilated, 29, 29, window=4, dilation=d, causal=causal) for d in (1, 2, 3)])  # (H, T, T)
    expected = dense_attention(q, k, v, allowed)
    out = kernel(q, k, v, causal=causal)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(out, g, q, k, v), _grads(expected, g, q, k, v)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_kernel_reuses_plans_across_lengths() -> None:
    """Plans are cached per shape: going back to an earlier length must use that length's pattern."""
    kernel = A.get("global_window", window=3, global_positions=[0, 4], chunk=4, backend="chunked")
    for t in (9, 20, 9):
        q, k, v, _ = _inputs(1, 2, t, t, t)
        allowed = ref.dense(ref.global_window, t, t, window=3, global_positions=[0, 4])
        torch.testing.assert_close(kernel(q, k, v), dense_attention(q, k, v, allowed), rtol=1e-5, atol=1e-5)


def test_chunked_memory_is_linear_in_length() -> None:
    """The largest tensor on the chunked path holds T x (chunk + window) scores, not T x T."""
    biggest = 0
    t, window = 4096, 32
    kernel = A.get("sliding_window", window=window, chunk=64, backend="chunked")
    q = torch.randn(1, 1, t, 8)
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            nonlocal biggest
            out = func(*args, **(kwargs or {}))
            for o in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(o, Tensor):
                    biggest = max(biggest, o.numel())
            return out

    with Largest():
        kernel(q, q, q)
    assert biggest <= t * (64 + window + 1)  # every chunk's (chunk, chunk + window + 1) scores at once
    assert biggest < t * t // 32


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind,params,match",
    [
        ("sliding_window", dict(window=0), "window=0"),
        ("sliding_window", dict(window=2.5), "window=2.5"),
        ("dilated_window", dict(dilation=0), "dilation=0"),
        ("dilated_window", dict(dilation=[1, 2], n_heads=3), "2 per-head values for 3 heads"),
        ("global_window", dict(global_positions=[-1]), "-1"),
        ("strided", dict(stride=0), "stride=0"),
        ("fixed", dict(stride=4, c=5), "c=5"),
        ("fixed", dict(stride=4, c=0), "c=0"),
        ("bigbird", dict(block=0), "block=0"),
        ("bigbird", dict(random_blocks=-1), "random_blocks=-1"),
        ("sliding_window", dict(backend="cuda"), "backend='cuda'"),
    ],
)
def test_bad_parameters_are_value_errors_at_construction(kind: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        A.get(kind, **params)


def test_bad_input_at_first_call() -> None:
    q = torch.randn(1, 2, 6, 8)
    with pytest.raises(ValueError, match="global position 9 is outside a sequence of length 6"):
        A.get("global_window", window=2, global_positions=[1, 9])(q, q, q)
    for kind in ("global_window", "bigbird"):
        with pytest.raises(ValueError, match="cannot be causal"):
            A.get(kind)(q, q, q, causal=True)
    with pytest.raises(ValueError, match="3 per-head values for 2 heads"):
        A.get("dilated_window", dilation=[1, 2, 3])(q, q, q)
    with pytest.raises(ValueError, match="backend='flex' needs CUDA"):
        A.get("sliding_window", backend="flex")(q, q, q)


def test_window_wider_than_sequence_is_full_attention() -> None:
    """Documented choice: a window wider than the sequence is allowed and sees everything."""
    q, k, v, _ = _inputs(1, 2, 9, 9, 0)
    out = A.get("sliding_window", window=64, backend="chunked")(q, k, v)
    torch.testing.assert_close(out, dense_attention(q, k, v, torch.ones(9, 9, dtype=torch.bool)), rtol=1e-5, atol=1e-5)


def test_sparse_kernel_in_multihead_attention_decodes_with_cache() -> None:
    """Causal sliding window with a KV cache: one token at a time equals the whole sequence."""
    torch.manual_seed(0)
    mha = A.MultiHeadAttention(16, 2, kind="sliding_window", kernel_params=dict(window=4)).eval()
    x = torch.randn(2, 9, 16)
    full, _ = mha(x, causal=True)
    cache = A.KVCache(max_len=9)
    steps = [mha(x[:, t : t + 1], causal=True, cache=cache)[0] for t in range(9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)



def test_kernel_dense_mask_helper_is_the_builder() -> None:
    kernel = A.get("strided", stride=3)
    assert torch.equal(kernel.dense_mask(10, causal=True), P.strided_mask(10, 10, stride=3, causal=True))
    assert A.get("dilated_window", window=4, dilation=[1, 2]).dense_mask(6, 9).shape == (2, 6, 9)


def test_per_head_pattern_with_per_head_mask_and_bias() -> None:
    """Chunked path with heads split by dilation, a (B, H, Tq, Tk) mask and bias: equals the reference path."""
    q, k, v, g = _inputs(2, 3, 26, 26, 7)
    gen = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 3, 26, 26, generator=gen) < 0.7
    bias = torch.randn(3, 26, 26, generator=gen, requires_grad=True)
    fast = A.get("dilated_window", window=4, dilation=[2, 1, 2], chunk=5, backend="chunked")
    ref = A.get("dilated_window", window=4, dilation=[2, 1, 2], backend="dense")
    out, want = fast(q, k, v, mask=mask, bias=bias), ref(q, k, v, mask=mask, bias=bias)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(_grads(out, g, q, k, v, bias), _grads(want, g, q, k, v, bias)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
