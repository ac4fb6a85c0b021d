"""Where a kernel's time goes: ``torch.profiler`` over one forward + backward step per row.

Run from the repository root on a CUDA machine:

    python benchmarks/profile_attention.py --rows linear:1024 linear:4096 lsh:16384 bigbird:4096 --out prof.md

Each row is warmed up (compiles happen there), timed over 10 steps with CUDA synchronisation,
then profiled for one step. The Markdown written to ``--out`` holds, per row: wall ms per step,
GPU busy ms per step (the sum of kernel times, each kernel counted once), the number of kernels,
dynamo's compile counters, and the top kernels by GPU time and the top ops by CPU time. The
device tool returns only the last 12,000 characters of printed output, so the tables go to a file.
Row names are those of ``benchmarks/attention.py`` (``KIND[@VARIANT]:LENGTH``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention import B, D, H, kernel_fn  # noqa: E402


def profile_row(name: str, t: int, device: torch.device) -> str:
    from torch._dynamo.utils import counters

    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, H, t, D, device=device, dtype=torch.bfloat16, generator=gen, requires_grad=True) for _ in range(3))
    grad = torch.randn(B, H, t, D, device=device, dtype=torch.bfloat16, generator=gen)
    fn = kernel_fn(name, device)

    def step() -> None:
        fn(q, k, v).backward(grad)
        q.grad = k.grad = v.grad = None

    for _ in range(3):
        step()
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(10):
        step()
    torch.cuda.synchronize(device)
    wall_ms = (time.perf_counter() - t0) * 100
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_ms = sum(e.device_time for e in kernels) / 1000
    table_gpu = prof.key_averages().table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=80)
    table_cpu = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=80)
    return (f"## {name} T={t}\n\nwall {wall_ms:.3f} ms/step, GPU busy {busy_ms:.3f} ms, {len(kernels)} kernels; "
            f"dynamo frames {dict(counters['frames'])}, recompiles {dict(counters['recompiles'])}\n\n"
            f"```\n{table_gpu}\n{table_cpu}\n```\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="+", required=True, metavar="NAME:LENGTH")
    ap.add_argument("--out", type=Path, required=True, help="the Markdown file to write")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("profile_attention.py needs a CUDA device")
    torch._dynamo.config.recompile_limit = 256
    device = torch.device("cuda")
    parts = [f"# attention profile: {torch.cuda.get_device_name(device)}, torch {torch.__version__}\n"]
    for row in args.rows:
        name, length = row.rsplit(":", 1)
        try:
            parts.append(profile_row(name, int(length), device))
        except Exception as e:  # noqa: BLE001 (one failing row must not lose the others)
            parts.append(f"## {row}\n\nfailed: {type(e).__name__}: {e}\n")
        args.out.write_text("\n".join(parts))
        print(parts[-1].splitlines()[2] if len(parts[-1].splitlines()) > 2 else parts[-1], flush=True)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
