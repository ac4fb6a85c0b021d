"""Attention calls replayed as CUDA graphs (``cuda_graphs=True``) against the same kernels run directly.

The reference is the kernel without graphs (compiled FlexAttention, compiled linear attention),
itself tested against dense masked softmax in ``test_sparse_flex.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch

import attnkit.attention as A
from attnkit.attention import graphed

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

CASES = [
    ("bigbird", dict(block=64, random_blocks=3, seed=0, flex_tiles=(64, 64)), False),
    ("bigbird", dict(block=64, random_blocks=3, seed=1), False),
    ("linear", {}, False),
    ("linear", {}, True),
]


def _inputs(gen: torch.Generator, t: int = 1024) -> list[torch.Tensor]:
    return [torch.randn(1, 2, t, 64, device="cuda", generator=gen, requires_grad=True) for _ in range(3)]


def _grads(out: torch.Tensor, inputs: list[torch.Tensor], g: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("kind,params,causal", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_replayed_steps_equal_direct_calls(kind: str, params: dict, causal: bool) -> None:
    """Three steps with new inputs: outputs and gradients of the replayed calls equal direct calls."""
    fast, ref = A.get(kind, **params, cuda_graphs=True), A.get(kind, **params)
    gen = torch.Generator(device="cuda").manual_seed(0)
    for _ in range(3):
        x = _inputs(gen)
        out, want = fast(*x, causal=causal), ref(*x, causal=causal)
        torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
        g = torch.randn_like(out)
        for a, b in zip(_grads(out, x, g), _grads(want, x, g)):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    assert len(graphed.cache_for(fast)) == 1  # one signature, captured once


def test_second_forward_before_backward_runs_uncaptured() -> None:
    """Two forwards (a shared layer) before one backward: both gradients are right."""
    params = dict(block=64, random_blocks=3, seed=0, flex_tiles=(64, 64))
    fast, ref = A.get("bigbird", **params, cuda_graphs=True), A.get("bigbird", **params)
    gen = torch.Generator(device="cuda").manual_seed(1)
    x, y = _inputs(gen), _inputs(gen)
    fast(*x).sum().backward()  # capture, then one clean step
    for t in x:
        t.grad = None
    got = (fast(*x) * 2 + fast(*y)).square().sum()
    want = (ref(*x) * 2 + ref(*y)).square().sum()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-2)
    gg = torch.autograd.grad(got, [*x, *y])
    gw = torch.autograd.grad(want, [*x, *y])
    for a, b in zip(gg, gw):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
    # a forward whose graph was dropped without a backward does not block later replays
    fast(*x)
    call = next(iter(graphed.cache_for(fast).values()))
    assert not call.pending


def test_inference_calls_and_deepcopy() -> None:
    params = dict(block=64, random_blocks=2, seed=3)
    fast, ref = A.get("bigbird", **params, cuda_graphs=True), A.get("bigbird", **params)
    gen = torch.Generator(device="cuda").manual_seed(2)
    x = _inputs(gen)
    with torch.no_grad():
        first = fast(*x)
        second = fast(*[t * 2 for t in x])  # the first output is a copy: not overwritten by the replay
        torch.testing.assert_close(first, ref(*x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(second, ref(*[t * 2 for t in x]), rtol=1e-4, atol=1e-4)
    clone = copy.deepcopy(fast)  # graphs live beside the kernel, not in it
    assert graphed.cache_for(clone) == {} and len(graphed.cache_for(fast)) == 1
