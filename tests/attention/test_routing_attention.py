"""Routing attention against references written here.

Routing is recomputed here from the kernel's centroids (nearest centroid by dot product of
unit vectors); the attention is then dense softmax with the mask [cluster(q_i) == cluster(k_j)].
The centroid update is checked against the EMA of eq. (12) (with means), written with loops.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import attnkit.attention as A


def route(x: Tensor, centroids: Tensor) -> Tensor:
    """(B, H, T) nearest centroid of each unit-normalised vector."""
    xn = x / x.norm(dim=-1, keepdim=True)
    return torch.einsum("bhtd,hcd->bhtc", xn.double(), centroids.double()).argmax(-1)


def dense(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor) -> Tensor:
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    w = torch.softmax(s.masked_fill(~allowed, float("-inf")), -1)
    return torch.where(allowed.any(-1, keepdim=True), w, torch.zeros_like(w)) @ v


def _inputs(tq: int, tk: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(  # type: ignore[return-value]
        torch.randn(2, 3, t, dd, generator=gen, dtype=torch.float64, requires_grad=True) for t, dd in ((tq, 8), (tk, 8), (tk, 5))
    )


@pytest.mark.parametrize("tq,tk", [(1, 1), (23, 23), (5, 40), (130, 130)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("chunk", [4, 64])
def test_routing_equals_dense_attention_within_clusters(tq: int, tk: int, causal: bool, padding: bool, chunk: int) -> None:
    kernel = A.get("routing", n_heads=3, head_dim=8, n_clusters=4, chunk=chunk, seed=1).double().eval()
    q, k, v = _inputs(tq, tk, tq + tk)
    allowed = route(q, kernel.centroids)[..., :, None] == route(k, kernel.centroids)[..., None, :]
    if causal:
        allowed = allowed & torch.tensor([[j <= tk - tq + i for j in range(tk)] for i in range(tq)])
    mask = None
    if padding:
        mask = torch.tensor([[j < n for j in range(tk)] for n in (tk, tk // 2)])[:, None, None, :]
        allowed = allowed & mask
    expected = dense(q, k, v, allowed)
    out = kernel(q, k, v, mask=mask, causal=causal)
    torch.testing.assert_close(out, expected)
    g = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(expected, (q, k, v), g)):
        torch.testing.assert_close(got, want)
    out_w, w = kernel(q, k, v, mask=mask, causal=causal, need_weights=True)
    torch.testing.assert_close(out_w, expected)
    assert (w[~allowed.expand_as(w)] == 0).all()


def test_one_cluster_is_full_attention() -> None:
    q, k, v = _inputs(17, 17, 0)
    out = A.get("routing", n_heads=3, head_dim=8, n_clusters=1).eval()(q.float(), k.float(), v.float())
    torch.testing.assert_close(out, dense(q, k, v, torch.ones(17, 17, dtype=torch.bool)).float(), rtol=1e-5, atol=1e-5)


def test_centroids_move_by_ema_in_training_only() -> None:
    kernel = A.get("routing", n_heads=2, head_dim=4, n_clusters=3, decay=0.9, seed=0)
    q = torch.randn(2, 2, 10, 4, dtype=torch.float64)
    k = torch.randn(2, 2, 10, 4, dtype=torch.float64)
    before = kernel.centroids.clone()
    kernel.eval()(q.float(), k.float(), k.float())
    assert torch.equal(kernel.centroids, before)
    expected = before.clone().double()
    cq, ck = route(q, before), route(k, before)
    for h in range(2):
        for c in range(3):
            means = []
            for x, cl in ((q, cq), (k, ck)):
                members = [x[b, h, t] / x[b, h, t].norm() for b in range(2) for t in range(10) if cl[b, h, t] == c]
                if members:
                    means.append(torch.stack(members).mean(0))
            if means:
                moved = 0.9 * before[h, c].double() + 0.1 * torch.stack(means).mean(0)
                expected[h, c] = moved / moved.norm()
    kernel.train()(q.float(), k.float(), k.float())
    torch.testing.assert_close(kernel.centroids.double(), expected, rtol=1e-5, atol=1e-6)
    assert "centroids" in kernel.state_dict()


def test_routing_bad_input() -> None:
    with pytest.raises(ValueError, match="n_clusters=0"):
        A.get("routing", n_clusters=0)
    with pytest.raises(ValueError, match="decay=1.0"):
        A.get("routing", decay=1.0)
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="centroids for 1 heads of size 64"):
        A.get("routing")(q, q, q)
