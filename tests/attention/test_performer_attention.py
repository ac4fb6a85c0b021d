"""Performer (FAVOR+) attention against references written here.

* Exact: the linear-attention form with the FAVOR+ feature map, recomputed here from the
  kernel's projection: phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m), x' = x d^(-1/4).
* Approximate, as the paper claims: with many features the weights approach softmax(QK^T/sqrt(d)).
* The recurrent decode equals the parallel causal form.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import attnkit.attention as A


def favor(x: Tensor, w: Tensor) -> Tensor:
    x = x / x.shape[-1] ** 0.25
    return torch.exp(x @ w.double().T - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(w.shape[0])


def explicit(q: Tensor, k: Tensor, v: Tensor, w: Tensor, allowed: Tensor | None) -> Tensor:
    a = favor(q, w) @ favor(k, w).transpose(-2, -1)  # (B, H, Tq, Tk)
    if allowed is not None:
        a = a * allowed
    den = a.sum(-1, keepdim=True)
    return a / torch.where(den > 0, den, torch.ones_like(den)) @ v


def _inputs(tq: int, tk: int, d: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(  # type: ignore[return-value]
        (torch.randn(2, 2, t, d, generator=gen, dtype=torch.float64) * 0.5).requires_grad_() for t in (tq, tk, tk)
    )


@pytest.mark.parametrize("tq,tk", [(1, 1), (13, 13), (4, 21), (21, 9)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [False, True])
def test_performer_equals_its_explicit_form(tq: int, tk: int, causal: bool, padding: bool) -> None:
    kernel = A.get("performer", head_dim=8, n_features=24, chunk=4).double()
    q, k, v = _inputs(tq, tk, 8, tq + tk)
    allowed = torch.tensor([[j <= tk - tq + i or not causal for j in range(tk)] for i in range(tq)]).reshape(tq, tk)
    mask = None
    if padding:
        mask = torch.tensor([[j < n for j in range(tk)] for n in (tk, tk // 2)])[:, None, None, :]
        allowed = allowed & mask
    expected = explicit(q, k, v, kernel.projection, allowed)
    out = kernel(q, k, v, mask=mask, causal=causal)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(expected, (q, k, v), g)):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_performer_approximates_softmax_attention() -> None:
    """Weights within 5 % of softmax(QK^T / sqrt(d)) with 4096 features, and much closer than with 16."""
    q, k, v = (x.detach() for x in _inputs(16, 16, 8, 0))
    exact = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1)
    errors = []
    for m in (16, 4096):
        _, w = A.get("performer", head_dim=8, n_features=m, seed=1).double()(q, k, v, need_weights=True)
        errors.append(float((w - exact).norm() / exact.norm()))
    assert errors[1] < 0.05 and errors[1] < errors[0] / 4, errors


def test_performer_kernel_estimate_is_unbiased() -> None:
    """Averaged over seeds, phi(q)^T phi(k) tends to exp(q^T k / sqrt(d)) (Lemma 1)."""
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 1, 6, 8, generator=gen, dtype=torch.float64) * 0.5 for _ in range(2))
    exact = torch.exp(q @ k.transpose(-2, -1) / math.sqrt(8))
    w = torch.cat([A.get("performer", head_dim=8, n_features=512, seed=s).projection for s in range(40)])
    estimate = favor(q, w) @ favor(k, w).transpose(-2, -1)
    assert float((estimate - exact).norm() / exact.norm()) < 0.02


def test_performer_features_are_orthogonal_gaussian_blocks() -> None:
    w = A.get("performer", head_dim=8, n_features=20).projection.double()
    block = w[:8] / w[:8].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(8, dtype=torch.float64), rtol=0, atol=1e-6)


def test_performer_recurrent_decode_equals_parallel_causal() -> None:
    kernel = A.get("performer", head_dim=8, n_features=32, chunk=4).double()
    q, k, v = (x.detach() for x in _inputs(11, 11, 8, 3))
    parallel = kernel(q, k, v, causal=True)
    state = kernel.init_state(2, 2, 8, dtype=torch.float64)
    outs = []
    for t in range(11):
        o, state = kernel.step(q[:, :, t : t + 1], k[:, :, t : t + 1], v[:, :, t : t + 1], state)
        outs.append(o)
    assert state.s.shape == (2, 2, 32, 8)
    torch.testing.assert_close(torch.cat(outs, dim=2), parallel, rtol=1e-9, atol=1e-9)


def test_performer_bad_input() -> None:
    with pytest.raises(ValueError, match="n_features=0"):
        A.get("performer", n_features=0)
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(ValueError, match="head_dim=64"):
        A.get("performer")(q, q, q)
