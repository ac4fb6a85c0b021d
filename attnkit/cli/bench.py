"""``attnkit bench attention``: time and peak memory of the attention kernels against dense attention.

Every kernel runs forward + backward on the same random ``(B, H, T, D)`` queries, keys and
values, at each length given, on this machine. ``dense`` is PyTorch's
``scaled_dot_product_attention`` (FlashAttention on recent GPUs). Peak memory is measured
on CUDA only (``torch.cuda.max_memory_allocated`` above what the step started with).

    attnkit bench attention --lengths 1024 4096 --kernels dense sliding_window linear --device cpu
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from attnkit.cli.helptext import plain
from attnkit.attention.benchmark import CAUSAL_OK, KERNELS, inputs, make_step, measure
from attnkit.errors import ConfigError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmark attention kernels on this machine", description="attnkit bench WHAT: time parts of attnkit on this machine.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_subparsers(dest="what", metavar="WHAT")
    what.required = True
    a = what.add_parser("attention", help="every attention kernel against dense attention", description=plain(__doc__),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096], help="sequence lengths (default: 1024 4096)")
    a.add_argument("--kernels", nargs="+", default=list(KERNELS), help=f"which (default: all of {', '.join(KERNELS)})")
    a.add_argument("--batch", type=int, default=1, help="batch size B (default: 1)")
    a.add_argument("--heads", type=int, default=12, help="attention heads H (default: 12)")
    a.add_argument("--head-dim", type=int, default=64, help="dimension D of each head's queries, keys and values (default: 64)")
    a.add_argument("--dtype", choices=list(DTYPES), default=None, help="precision of the inputs (default: bf16 on CUDA, fp32 on CPU)")
    a.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    a.add_argument("--causal", action="store_true", help="causal attention (kernels that cannot be causal are skipped)")
    a.add_argument("--forward-only", action="store_true", help="time the forward pass only")
    a.add_argument("--iters", type=int, default=5, help="timed steps per kernel and length (default: 5)")
    a.add_argument("--cuda-graphs", action="store_true",
                   help="run bigbird (with 64 x 64 FlexAttention tiles) and linear with cuda_graphs=True: each call's "
                        "forward and backward captured once as CUDA graphs and replayed; no effect on the CPU")
    a.set_defaults(run=run)


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
