"""Reformer LSH attention against references written here.

* One bucket and one chunk: every round is full attention over the unit-normalised keys
  without self (unless nothing else is visible), so the result is full attention.
* Any buckets: the rounds rebuilt with Python loops from the kernel's buckets (sort by
  bucket then position, chunks, own + previous chunk, same bucket, no self unless alone),
  each a softmax, combined by softmax over the rounds' log-sum-exps.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import attnkit.attention as A


def _inputs(t: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 2, t, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, t, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, t, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    return q, k, v


def full_without_self(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    kn = k / k.norm(dim=-1, keepdim=True)
    s = q @ kn.transpose(-2, -1) / math.sqrt(q.shape[-1])
    eye = torch.eye(q.shape[-2], dtype=torch.bool)
    others = allowed & ~eye
    vis = torch.where(others.any(-1, keepdim=True), others, allowed)
    w = torch.softmax(s.masked_fill(~vis, float("-inf")), -1)
    w = torch.where(vis.any(-1, keepdim=True), w, torch.zeros_like(w))
    return w @ v


@pytest.mark.parametrize("n_hashes", [1, 2, 5])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("t", [1, 2, 9, 30])
def test_one_bucket_equals_full_attention(n_hashes: int, causal: bool, t: int) -> None:
    q, k, v = _inputs(t, t)
    allowed = torch.ones(t, t, dtype=torch.bool).tril() if causal else torch.ones(t, t, dtype=torch.bool)
    expected = full_without_self(q, k, v, allowed)
    out = A.get("lsh", n_hashes=n_hashes, n_buckets=1, chunk=32)(q, k, v, causal=causal)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(expected, (q, k, v), g)):
        torch.testing.assert_close(got, want)


def rounds_reference(kernel, q: Tensor, k: Tensor, v: Tensor, causal: bool, lengths: list[int]) -> Tensor:
    """Multi-round LSH attention from the kernel's buckets, with loops over positions."""
    buckets = kernel.buckets(k)  # (R, B, H, T)
    b, h, t, _ = q.shape
    kn = k / k.norm(dim=-1, keepdim=True)
    s = q @ kn.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    outs, lses = [], []
    for bk in buckets.tolist():
        vis = torch.zeros(b, h, t, t, dtype=torch.bool)
        for bi in range(b):
            for hi in range(h):
                order = sorted(range(t), key=lambda p: (bk[bi][hi][p], p))
                chunk_of = {p: r // kernel.chunk for r, p in enumerate(order)}
                for i in range(t):
                    cand = [
                        j for j in range(t)
                        if bk[bi][hi][j] == bk[bi][hi][i] and chunk_of[j] in (chunk_of[i], chunk_of[i] - 1)
                        and j < lengths[bi] and (j <= i or not causal)
                    ]
                    if len(cand) > 1 or (cand and cand != [i]):
                        cand = [j for j in cand if j != i] or cand
                    for j in cand:
                        vis[bi, hi, i, j] = True
        sr = s.masked_fill(~vis, float("-inf"))
        lse = torch.logsumexp(sr, -1, keepdim=True)
        w = torch.where(vis, torch.softmax(sr, -1), torch.zeros_like(s))
        outs.append(w @ v)
        lses.append(lse)
    lse = torch.stack(lses)  # (R, B, H, T, 1)
    weight = torch.softmax(lse, dim=0).nan_to_num(0.0)
    return (torch.stack(outs) * weight).sum(0)


@pytest.mark.parametrize("n_buckets,chunk,n_hashes", [(2, 4, 1), (4, 5, 3), (8, 3, 2)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_lsh_equals_rounds_rebuilt_with_loops(n_buckets: int, chunk: int, n_hashes: int, causal: bool, padding: bool) -> None:
    t = 19
    q, k, v = (x.detach() for x in _inputs(t, n_buckets))
    kernel = A.get("lsh", n_buckets=n_buckets, chunk=chunk, n_hashes=n_hashes, seed=3)
    lengths = [t, 12] if padding else [t, t]
    mask = torch.tensor([[j < n for j in range(t)] for n in lengths])[:, None, None, :] if padding else None
    expected = rounds_reference(kernel, q, k, v, causal, lengths)
    torch.testing.assert_close(kernel(q, k, v, mask=mask, causal=causal), expected)
    out_w, w = kernel(q, k, v, mask=mask, causal=causal, need_weights=True)
    torch.testing.assert_close(out_w, expected)
    row = w.sum(-1)
    assert (((row - 1).abs() < 1e-9) | (row == 0)).all()  # rows that see nothing (padding) are zero


def test_lsh_buckets_are_seeded_and_balanced_enough() -> None:
    k = torch.randn(1, 1, 512, 16)
    kernel = A.get("lsh", n_buckets=8, n_hashes=2, seed=0)
    b = kernel.buckets(k)
    assert b.shape == (2, 1, 1, 512) and int(b.min()) >= 0 and int(b.max()) < 8
    assert torch.equal(b, kernel.buckets(k))
    assert not torch.equal(b, A.get("lsh", n_buckets=8, n_hashes=2, seed=1).buckets(k))
    assert len(torch.unique(b[0])) == 8


def test_lsh_bad_input() -> None:
    with pytest.raises(ValueError, match="n_buckets=3"):
        A.get("lsh", n_buckets=3)
    with pytest.raises(ValueError, match="chunk=0"):
        A.get("lsh", chunk=0)
    q = torch.randn(1, 1, 4, 8)
    with pytest.raises(ValueError, match="as many queries as keys"):
        A.get("lsh")(q[:, :, :2], q, q)


def test_permute_gradient_is_the_inverse_gather() -> None:
    """The sort's row gather (batched permutations) against gather's own gradient (and gradcheck in float64)."""
    from attnkit.attention.gather import gather_rows, inverse_index

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 11, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    order = torch.stack([torch.randperm(11, generator=gen) for _ in range(6)]).reshape(2, 3, 11)
    undo = inverse_index(order, 11)
    want = x.gather(2, order[..., None].expand(-1, -1, -1, 4))
    got = gather_rows(x, order, undo)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    g = torch.randn_like(got)
    torch.testing.assert_close(torch.autograd.grad(got, x, g)[0], torch.autograd.grad(want, x, g)[0], rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda y: gather_rows(y, order, undo), (x,))


def test_half_precision_follows_float32() -> None:
    """bf16 inputs (weights cast to bf16 for the product with V) stay near the float32 result."""
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(1, 2, 200, 16, generator=gen).bfloat16() for _ in range(3))  # same buckets in both
    kernel = A.get("lsh", n_hashes=2, n_buckets=4, chunk=16)
    want = kernel(q.float(), k.float(), v.float(), causal=True)
    got = kernel(q, k, v, causal=True)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0, atol=0.05)
