"""``attnkit.attention.graphed`` bookkeeping on the CPU: which calls share a capture, eviction, where
captures are kept. The captures themselves need CUDA (``test_graphed_gpu.py``)."""

from __future__ import annotations

import copy

import torch

import attnkit.attention as A
from attnkit.attention import graphed


class FakeCall:
    """Stands in for GraphedCall: records its construction, calls ``fn`` directly."""

    made: list[tuple] = []

    def __init__(self, fn, q, k, v) -> None:
        self.fn = fn
        FakeCall.made.append(graphed.signature(q, k, v))

    def __call__(self, q, k, v):
        return self.fn(q, k, v)


def test_one_capture_per_signature_and_eviction(monkeypatch) -> None:
    monkeypatch.setattr(graphed, "GraphedCall", FakeCall)
    FakeCall.made = []
    cache: dict = {}
    fn = lambda q, k, v: q + k + v  # noqa: E731
    x = [torch.ones(1, 2, 8, 4) for _ in range(3)]
    assert torch.equal(graphed.run(cache, ("a",), fn, *x), 3 * x[0])
    graphed.run(cache, ("a",), fn, *[t * 2 for t in x])  # same signature: no new capture
    assert len(FakeCall.made) == 1
    graphed.run(cache, ("a",), fn, *[t.requires_grad_() for t in (torch.ones(1, 2, 8, 4) for _ in range(3))])
    assert len(FakeCall.made) == 2  # inputs needing gradients: a capture of their own
    with torch.no_grad():  # gradients off: the signature of inputs that need none (the first capture)
        graphed.run(cache, ("a",), fn, *[torch.ones(1, 2, 8, 4, requires_grad=True) for _ in range(3)])
    graphed.run(cache, ("b",), fn, *x)  # another key
    assert len(FakeCall.made) == 3 and len(cache) == 3
    for t in range(9, 20):  # new lengths: the oldest captures go beyond max_entries
        graphed.run(cache, ("a",), fn, *[torch.ones(1, 2, t, 4) for _ in range(3)], max_entries=8)
    assert len(cache) == 8


def test_captures_live_beside_the_kernel() -> None:
    kernel = A.get("linear", cuda_graphs=True)
    graphed.cache_for(kernel)["x"] = object()
    clone = copy.deepcopy(kernel)
    assert graphed.cache_for(clone) == {} and "x" in graphed.cache_for(kernel)
