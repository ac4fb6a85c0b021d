"""One attention call's forward and backward replayed as two CUDA graphs (opt-in, ``cuda_graphs=True``).

A long-sequence kernel that runs as a compiled function pays that function's Python layers on
every call: dynamo's guards, the AOTAutograd wrappers, the kernel launches. At a few thousand
positions these cost more than the GPU work of BigBird or linear attention. :class:`GraphedCall` captures the call once per input signature, in the way
``torch.cuda.make_graphed_callables`` does: a forward graph, then a backward graph that runs
``torch.autograd.grad`` from the captured output. A call then copies its inputs into the
captured ones, replays the forward graph and returns a copy of the output; its backward copies
the output gradient in, replays the backward graph and returns copies of the input gradients.
That is about ten operations instead of the compiled function's layers.

What the captured graphs share is one set of buffers, so a second forward before the first
one's backward would overwrite what the backward needs. While a forward's backward is pending
(its autograd graph alive), further calls run the function itself, uncaptured. This covers
weight-shared layers (ALBERT), activation checkpointing and evaluation inside a training
step. Each input signature (shapes, dtypes, which inputs need gradients) has its own pair of
graphs and buffers: workloads with many lengths should bucket them.
"""

from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch import Tensor

Fn = Callable[[Tensor, Tensor, Tensor], Tensor]


class _Token:
    """Lives as long as the autograd graph of one captured forward (held by its backward node)."""


class GraphedCall:
    """``fn(q, k, v)`` captured for the signature of the given inputs (CUDA tensors)."""

    WARMUP = 3  # calls before capture: compilation, autotuning and lazy initialisation happen here

    def __init__(self, fn: Fn, q: Tensor, k: Tensor, v: Tensor) -> None:
        self.fn = fn
        grad = torch.is_grad_enabled()
        self.inputs = [torch.empty_like(x, memory_format=torch.contiguous_format).requires_grad_(grad and x.requires_grad)
                       for x in (q, k, v)]
        self.trainable = [x for x in self.inputs if x.requires_grad]
        self._pending: weakref.ref | None = None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                out = fn(*self.inputs)
                if self.trainable:
                    torch.autograd.grad(out, self.trainable, torch.zeros_like(out))
        torch.cuda.current_stream().wait_stream(side)
        pool = torch.cuda.graph_pool_handle()
        self.forward_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.forward_graph, pool=pool):
            self.out = fn(*self.inputs)
        self.grad_out = torch.empty_like(self.out)
        self.backward_graph: torch.cuda.CUDAGraph | None = None
        self.grads: tuple[Tensor, ...] = ()
        if self.trainable:
            self.backward_graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.backward_graph, pool=pool):
                # Not retained: replays re-run the recorded kernels on the pool's memory, which
                # no other capture allocates from (and compiled backwards donate their buffers).
                self.grads = torch.autograd.grad(self.out, self.trainable, self.grad_out)

    @property
    def pending(self) -> bool:
        """Whether a replayed forward's backward has not run yet (and its autograd graph is alive)."""
        return self._pending is not None and self._pending() is not None

    def __call__(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        needs_grad = torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))
        if needs_grad and self.pending:
            return self.fn(q, k, v)  # the captured buffers still serve an earlier forward
        return _Replay.apply(self, needs_grad, q, k, v)


class _Replay(torch.autograd.Function):
    @staticmethod
    def forward(ctx, call: GraphedCall, needs_grad: bool, q: Tensor, k: Tensor, v: Tensor) -> Tensor:  # type: ignore[override]
        for buffer, x in zip(call.inputs, (q, k, v)):
            buffer.copy_(x)
        call.forward_graph.replay()
        ctx.call = call
        if needs_grad:
            ctx.token = _Token()
            call._pending = weakref.ref(ctx.token)
        return call.out.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        call: GraphedCall = ctx.call  # only a forward that needed gradients has a backward: its capture has one
        call.grad_out.copy_(g)
        call.backward_graph.replay()  # type: ignore[union-attr]
        call._pending = None
        grads = iter(call.grads)
        return (None, None, *(next(grads).clone() if x.requires_grad else None for x in call.inputs))


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cache_for(owner: object) -> dict:
    """The captured calls of ``owner`` (a kernel), kept beside it rather than in it, so that
    copying a model (``copy.deepcopy``, weight averaging) never copies CUDA graphs."""
    if owner not in _CACHES:
        _CACHES[owner] = {}
    return _CACHES[owner]


def signature(q: Tensor, k: Tensor, v: Tensor) -> tuple:
    """What a captured call is specific to."""
    return tuple((tuple(x.shape), x.dtype, x.requires_grad and torch.is_grad_enabled()) for x in (q, k, v)) + (str(q.device),)


def run(cache: dict, key: tuple, fn: Fn, q: Tensor, k: Tensor, v: Tensor, max_entries: int = 8) -> Tensor:
    """``fn(q, k, v)`` through the :class:`GraphedCall` stored in ``cache`` under ``key`` and the
    inputs' signature, captured on first use; the oldest entry goes beyond ``max_entries``."""
    full = (key, signature(q, k, v))
    call = cache.get(full)
    if call is None:
        if len(cache) >= max_entries:
            cache.pop(next(iter(cache)))
        call = cache[full] = GraphedCall(fn, q, k, v)
    return call(q, k, v)
