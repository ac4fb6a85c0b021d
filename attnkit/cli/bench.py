"""``attnkit bench attention``: time and peak memory of the attention kernels against dense attention.

Every kernel runs forward + backward on the same random ``(B, H, T, D)`` queries, keys and
values, at each length given, on this machine. ``dense`` is PyTorch's
``scaled_dot_product_attention`` (FlashAttention on recent GPUs). Peak memory is measured
on CUDA only (``torch.cuda.max_memory_allocated`` above what the step started with).

    attnkit bench attention --lengths 1024 4096 --kernels dense sliding_window linear --device cpu
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.errors import ConfigError

# name -> (registered kind, params); "dense" is torch's SDPA. Sizes follow issue 6's targets.
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
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmark attention kernels on this machine", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_subparsers(dest="what", metavar="WHAT")
    what.required = True
    a = what.add_parser("attention", help="every attention kernel against dense attention", description=__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096], help="sequence lengths (default: 1024 4096)")
    a.add_argument("--kernels", nargs="+", default=list(KERNELS), help=f"which (default: all of {', '.join(KERNELS)})")
    a.add_argument("--batch", type=int, default=1)
    a.add_argument("--heads", type=int, default=12)
    a.add_argument("--head-dim", type=int, default=64)
    a.add_argument("--dtype", choices=list(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    a.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    a.add_argument("--causal", action="store_true", help="causal attention (kernels that cannot be causal are skipped)")
    a.add_argument("--forward-only", action="store_true", help="time the forward pass only")
    a.add_argument("--iters", type=int, default=5, help="timed steps per kernel and length (default: 5)")
    a.add_argument("--cuda-graphs", action="store_true",
                   help="bigbird (with 64 x 64 tiles) and linear with cuda_graphs=True: each call replayed as captured CUDA "
                        "graphs, their fastest setting at 1k-16k on an H200 (BENCHMARKS.md); no effect on the CPU")
    a.set_defaults(run=run)


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

    ``graphs``: the options of :data:`GRAPHED` for the kernels that have them."""
    kind, params = KERNELS[name]
    if graphs:
        params = {**params, **GRAPHED.get(name, {})}
    if kind == "sdpa":
        fn: Callable[..., Tensor] = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)  # noqa: E731
    else:
        import attnkit.attention as A

        if kind == "linformer":
            params = {**params, "max_len": q.shape[-2]}
        kernel = A.build(kind, head_dim=q.shape[-1], n_heads=q.shape[1], params=params).to(q.device)
        fn = lambda q, k, v: kernel(q, k, v, causal=causal)  # noqa: E731
    grad = torch.randn_like(q) if backward else None

    def step(_i: int) -> None:
        out = fn(q, k, v)
        if grad is not None:
            out.backward(grad)
            q.grad = k.grad = v.grad = None

    return step


def inputs(b: int, h: int, t: int, d: int, dtype: torch.dtype, device: torch.device, backward: bool) -> tuple[Tensor, Tensor, Tensor]:
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


def run(args: argparse.Namespace) -> int:
    unknown = [k for k in args.kernels if k not in KERNELS]
    if unknown:
        raise ConfigError(f"unknown kernel {unknown[0]!r} for bench attention; choose from: {', '.join(KERNELS)}")
    for name in ("batch", "heads", "head_dim", "iters"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if any(t < 1 for t in args.lengths):
        raise ConfigError(f"--lengths must be positive, got {args.lengths}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: torch {torch.__version__} sees no CUDA device")
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    backward = not args.forward_only
    names = [n for n in args.kernels if not args.causal or n in CAUSAL_OK]
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), {dtype}, "
          f"B={args.batch} H={args.heads} D={args.head_dim}, {'forward+backward' if backward else 'forward'}"
          f"{', causal' if args.causal else ''}, median of {args.iters}")
    print(f"{'kernel':<16}{'T':>8}{'ms':>11}{'peak MiB':>11}{'vs dense':>10}")
    for t in args.lengths:
        dense_ms = None
        for name in names:
            q, k, v = inputs(args.batch, args.heads, t, args.head_dim, dtype, device, backward)
            try:
                ms, peak = measure(make_step(name, q, k, v, causal=args.causal, backward=backward, graphs=args.cuda_graphs), device, args.iters)
            except (ValueError, RuntimeError) as e:  # out of memory, or a size the kernel refuses
                print(f"{name:<16}{t:>8}  failed: {str(e).splitlines()[0][:80]}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            dense_ms = ms if name == "dense" else dense_ms
            ratio = f"{dense_ms / ms:.2f}x" if dense_ms else "-"
            mem = f"{peak / 2**20:.0f}" if peak is not None else "-"
            print(f"{name:<16}{t:>8}{ms:>11.2f}{mem:>11}{ratio:>10}")
    return 0
