"""Whole optimizer steps replayed as CUDA graphs, one graph per batch signature (``train.execution.cuda_graphs``).

A Transformer step on short rows (Multi30k: 16-30 tokens a sentence) is limited by the host:
Python and the dispatcher issue its kernels one by one, slower than the GPU runs them, so the
GPU waits. A CUDA graph records those launches once and replays them with one call, so a step costs
its GPU time. :class:`GraphedSteps` records the whole step -- forward, backward, gradient
scaling, clipping and the optimizer's update -- for each batch *signature* (the shapes and
dtypes of its tensors and the values of everything else in it), the way PyTorch's "whole
network capture" recipe does (CUDA semantics notes, "CUDA Graphs"), and replays it after
copying the batch into the recorded input buffers.

What the recorded step may do, and what the caller arranges:

* no host reads of device values (``.item()``, ``bool(t)``, ``int(t)``): capture refuses them;
* everything that lives from one step to the next lives outside the graph and stays at one
  address: the weights, the gradients (zeroed in place, never set to ``None``), the optimizer
  state, and the learning rate as a device tensor that the schedule fills before each step
  (:func:`attnkit.training.optim.build_optimizer` with ``capturable=True``);
* random numbers (dropout) are drawn afresh at every replay: PyTorch advances the generator's
  offset per replay;
* what the step returns is overwritten by the next replay of the same graph: read or copy it
  before then.

A signature is run eagerly the first time it is seen (it warms lazy state up: cuBLAS handles,
optimizer state, per-shape plans), and recorded the second time; the first ``warmup`` steps run
eagerly whatever their signature. All graphs share one memory pool: they never run at the same
time, and nothing they allocate outlives a replay except their returned tensors. Past
``max_graphs`` signatures, new ones run eagerly. Token-count batches of Multi30k come in 29
shapes over the recipe's 3,500 steps, so the recipe records 29 graphs.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Hashable, Sequence

import torch
from torch import Tensor

log = logging.getLogger(__name__)

Body = Callable[[Any], Sequence[Tensor]]


def map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """``obj`` rebuilt with ``fn`` applied to every tensor in it (dataclasses, dicts, lists, tuples)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj) if f.init})
    if isinstance(obj, dict):
        return type(obj)((k, map_tensors(v, fn)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a NamedTuple
        return type(obj)(*(map_tensors(v, fn) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(v, fn) for v in obj)
    return obj


def tensors(obj: Any) -> list[Tensor]:
    """The tensors in ``obj``, in the order :func:`map_tensors` visits them (nothing rebuilt: it runs every step)."""
    if isinstance(obj, Tensor):
        return [obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [t for f in dataclasses.fields(obj) if f.init for t in tensors(getattr(obj, f.name))]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in tensors(v)]
    return []


def signature(obj: Any) -> Hashable:
    """What a recorded graph is specific to: each tensor's shape, dtype and device, and the value
    of everything else (a graph bakes Python numbers in)."""
    if isinstance(obj, Tensor):
        return ("tensor", tuple(obj.shape), obj.dtype, obj.device)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj).__name__, *(signature(getattr(obj, f.name)) for f in dataclasses.fields(obj)))
    if isinstance(obj, dict):
        return ("dict", *((k, signature(v)) for k, v in obj.items()))
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, *(signature(v) for v in obj))
    try:
        hash(obj)
    except TypeError:
        return ("repr", repr(obj))
    return ("value", obj)


@dataclasses.dataclass
class _Recorded:
    graph: torch.cuda.CUDAGraph
    inputs: list[Tensor]  # the buffers the graph reads the batch from
    outputs: Sequence[Tensor]  # what the body returned, rewritten by each replay


class GraphedSteps:
    """``body(batch)`` (one optimizer step, returning tensors) run as recorded CUDA graphs.

    Args:
        body: the step; see the module docstring for what it may and may not do.
        warmup: steps run eagerly before the first recording (PyTorch's recipe uses a few).
        max_graphs: the most signatures recorded; later new ones run eagerly.

    ``graphed_calls`` and ``eager_calls`` count how the steps ran.
    """

    WARMUP = 3  # steps run eagerly before the first recording, by default

    def __init__(self, body: Body, *, warmup: int = WARMUP, max_graphs: int = 64) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("GraphedSteps needs a CUDA device")
        self.body, self.warmup, self.max_graphs = body, warmup, max_graphs
        self.recorded: dict[Hashable, _Recorded] = {}
        self.seen: set[Hashable] = set()
        self.side = torch.cuda.Stream()
        self.pool = torch.cuda.graph_pool_handle()
        self.graphed_calls = self.eager_calls = 0
        self._full_logged = False

    def __call__(self, batch: Any) -> Sequence[Tensor]:
        key = signature(batch)
        rec = self.recorded.get(key)
        if rec is None:
            calls = self.graphed_calls + self.eager_calls
            if calls < self.warmup or key not in self.seen or self._full():
                self.seen.add(key)
                return self._eager(batch)
            rec = self._record(key, batch)
        torch._foreach_copy_(rec.inputs, tensors(batch))
        rec.graph.replay()
        self.graphed_calls += 1
        return rec.outputs

    def _full(self) -> bool:
        full = len(self.recorded) >= self.max_graphs
        if full and not self._full_logged:
            log.info("%d step graphs recorded (max_graphs): new batch shapes run eagerly", self.max_graphs)
            self._full_logged = True
        return full

    def _eager(self, batch: Any) -> Sequence[Tensor]:
        """The body on a side stream, as PyTorch's recipe warms up before a capture."""
        main = torch.cuda.current_stream()
        self.side.wait_stream(main)
        with torch.cuda.stream(self.side):
            out = self.body(batch)
        main.wait_stream(self.side)
        self.eager_calls += 1
        return out

    def _record(self, key: Hashable, batch: Any) -> _Recorded:
        static = map_tensors(batch, lambda t: t.clone())  # input buffers, outside the graphs' pool
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                outputs = self.body(static)
        except RuntimeError as e:
            raise RuntimeError(
                f"recording the training step as a CUDA graph failed: {str(e).splitlines()[0]}. The step must not read "
                "device values on the host (.item(), bool(tensor)) nor allocate persistent state; turn train.execution.cuda_graphs off"
            ) from e
        rec = _Recorded(graph, tensors(static), outputs)
        self.recorded[key] = rec
        log.debug("recorded a step graph for %s (%d so far)", key, len(self.recorded))
        return rec
