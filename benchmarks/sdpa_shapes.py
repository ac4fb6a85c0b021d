"""What a new sequence length costs SDPA on the GPU, with and without the cuDNN backend.

Variable-length fine-tuning batches (SST-2: about 60 distinct lengths per epoch) call
``F.scaled_dot_product_attention`` with a new shape at almost every step. This times, for a
bert-base attention shape (batch 32, 12 heads, head dim 64, bf16, a key-padding mask), the
forward + backward at each of ``--lengths`` (first call and a repeat call per length), with
PyTorch's default backend choice and with cuDNN attention disabled. Run on a CUDA machine:

    python benchmarks/sdpa_shapes.py --out sdpa-shapes.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
try:
    from benchmarks import common  # noqa: E402
except ImportError:  # pragma: no cover
    import common  # type: ignore[no-redef]  # noqa: E402


def step(t: int, device: torch.device, masked: bool) -> float:
    """Seconds for one forward + backward at length ``t`` (synchronised)."""
    q, k, v = (torch.randn(32, 12, t, 64, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = None
    if masked:
        keep = torch.ones(32, t, dtype=torch.bool, device=device)
        keep[::2, t // 2 + 1 :] = False  # half the rows padded
        mask = torch.zeros(32, 1, 1, t, device=device, dtype=torch.bfloat16).masked_fill_(~keep[:, None, None, :], float("-inf"))
    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    F.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
    torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=list(range(9, 73, 3)), help="sequence lengths (default: 9, 12, ..., 72)")
    p.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = p.parse_args()
    device = torch.device("cuda")
    rows = []
    for masked in (False, True):
        for cudnn in (True, False):
            torch.backends.cuda.enable_cudnn_sdp(cudnn)
            step(256, device, masked)  # library warm-up
            first = [step(t, device, masked) for t in args.lengths]
            again = [step(t, device, masked) for t in args.lengths]
            row = {"mask": masked, "cudnn_enabled": cudnn, "first_ms_mean": 1e3 * sum(first) / len(first),
                   "first_ms_max": 1e3 * max(first), "repeat_ms_mean": 1e3 * sum(again) / len(again)}
            rows.append(row)
            print(f"mask={masked!s:5} cudnn={cudnn!s:5}: new length {row['first_ms_mean']:.2f} ms mean "
                  f"({row['first_ms_max']:.1f} max), seen length {row['repeat_ms_mean']:.2f} ms", flush=True)
    torch.backends.cuda.enable_cudnn_sdp(True)
    if args.out:
        args.out.write_text(json.dumps({"lengths": args.lengths, "rows": rows, "environment": common.environment(device)}, indent=1))


if __name__ == "__main__":
    main()
