"""Named attention-kernel settings and a timing harness, shared by ``attnkit bench attention`` and ``benchmarks/``.

:data:`KERNELS` names each long-sequence kernel with the parameters it is timed at (``dense``
is PyTorch's ``scaled_dot_product_attention``); :data:`VARIANTS` are named option sets that
a kernel name may carry after ``@`` (``bigbird@t64cg``). :func:`make_step` builds one forward
(+ backward) call and :func:`measure` takes its median time and peak memory.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.attention.registry import build

# name -> (registered kind, params); "dense" is torch's SDPA.
KERNELS: dict[str, tuple[str, dict[str, Any]]] = {
    "dense": ("sdpa", {}),
    "sliding_window": ("sliding_window", {"window": 512}),
    "dilated_window": ("dilated_window", {"window": 512, "dilation": 2}),
    "global_window": ("global_window", {"window": 512, "global_positions": list(range(8))}),
    "strided": ("strided", {"stride": 128}),
    "fixed": ("fixed", {"stride": 128, "c": 8}),
    "bigbird": ("bigbird", {"block": 64, "random_blocks": 3}),
    "linear": ("linear", {}),
    "lsh": ("lsh", {"n_hashes": 4, "n_buckets": 32, "chunk": 64}),
    "routing": ("routing", {"n_clusters": 16, "chunk": 128}),
    "performer": ("performer", {"n_features": 256}),
    "linformer": ("linformer", {"k": 256}),  # max_len: the length benchmarked
}
CAUSAL_OK = {"dense", "sliding_window", "dilated_window", "strided", "fixed", "linear", "lsh", "routing", "performer"}

# Named option sets a kernel name may carry after "@" in the benchmarks (``bigbird@t64cg``).
VARIANTS: dict[str, dict[str, Any]] = {
    "chunked": {"backend": "chunked"},  # the chunked path instead of FlexAttention
    "kv64": {"flex_tiles": (128, 64)}, "t64": {"flex_tiles": (64, 64)},  # bigbird's FlexAttention tiles
    "cg": {"cuda_graphs": True}, "t64cg": {"flex_tiles": (64, 64), "cuda_graphs": True},  # calls replayed as CUDA graphs
    "generic": {"function": False},  # eager non-causal linear on the generic path instead of its autograd Function
}
GRAPHED = {"bigbird": VARIANTS["t64cg"], "linear": VARIANTS["cg"]}  # --cuda-graphs


def make_step(name: str, q: Tensor, k: Tensor, v: Tensor, *, causal: bool, backward: bool, graphs: bool = False) -> Callable[[int], None]:
    """One forward (+ backward) of kernel ``name`` on ``q, k, v``; gradients are dropped after.

    Args:
        name: a key of :data:`KERNELS`.
        q, k, v: ``(B, H, T, D)`` inputs.
        causal: causal attention.
        backward: also run the backward pass.
        graphs: add the options of :data:`GRAPHED` for the kernels that have them.

    Returns:
        A function of the step index that runs one step.
    """
    kind, params = KERNELS[name]
    if graphs:
        params = {**params, **GRAPHED.get(name, {})}
    if kind == "sdpa":
        fn: Callable[..., Tensor] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
    else:
        if kind == "linformer":
            params = {**params, "max_len": q.shape[-2]}
        kernel = build(kind, head_dim=q.shape[-1], n_heads=q.shape[1], params=params).to(q.device)
        fn = lambda q, k, v: kernel(q, k, v, causal=causal)  # noqa: E731
    grad = torch.randn_like(q) if backward else None

    def step(_i: int) -> None:
        out = fn(q, k, v)
        if grad is not None:
            out.backward(grad)
            q.grad = k.grad = v.grad = None

    return step


def inputs(b: int, h: int, t: int, d: int, dtype: torch.dtype, device: torch.device, backward: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Seeded random queries, keys and values ``(b, h, t, d)``, requiring gradients when ``backward``."""
    gen = torch.Generator(device=device).manual_seed(0)
    return tuple(  # type: ignore[return-value]
        torch.randn(b, h, t, d, generator=gen, device=device, dtype=dtype).requires_grad_(backward) for _ in range(3)
    )


def measure(step: Callable[[int], None], device: torch.device, iters: int) -> tuple[float, int | None]:
    """Median milliseconds over ``iters`` steps after 2 warm-up steps, and the peak bytes of one step."""
    for i in range(2):
        step(i)
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step(0)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    times = []
    for i in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step(i)
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step(i)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), peak


__all__ = ["CAUSAL_OK", "GRAPHED", "KERNELS", "VARIANTS", "inputs", "make_step", "measure"]
