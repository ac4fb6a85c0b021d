"""SDPA's backends on the attention shapes of the Multi30k recipe, forward + backward.

    python benchmarks/sdpa_backends.py [--batch 256 --src 32 --tgt 30] [--out-dir DIR]

The recipe (``benchmarks/translate.py``) attends over ~30 tokens with 8 heads of 64 and about
256 sentences per batch, with dropout 0.3 on the attention weights. Three calls per layer:
encoder self-attention and cross-attention with a padding bias, and causal decoder
self-attention with no mask. For each, every backend that accepts the inputs is timed
(CUDA events, median of interleaved rounds). Backends that refuse the inputs are reported as
such. The host's cost of entering ``torch.nn.attention.sdpa_kernel`` is timed too.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from benchmarks import common  # noqa: E402
except ImportError:
    import common  # type: ignore[no-redef]  # noqa: E402

BACKENDS = {
    "default": None,  # SDPA's own choice
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def cases(b: int, s: int, t: int, device: torch.device, dtype: torch.dtype) -> dict:
    """name -> (q, k, v, attn_mask, is_causal) with random right padding of the sources."""
    g = torch.Generator(device="cpu").manual_seed(0)
    lengths = torch.randint(s // 2, s + 1, (b,), generator=g)
    pad = torch.arange(s)[None, :] >= lengths[:, None]  # (B, S) True = padding
    bias = torch.zeros(b, 1, 1, s).masked_fill(pad[:, None, None, :], float("-inf")).to(device, dtype)

    def qkv(tq: int, tk: int):
        def make(n: int) -> torch.Tensor:
            return torch.randn(b, 8, n, 64, device=device, dtype=dtype, requires_grad=True)
        return make(tq), make(tk), make(tk)

    return {
        "encoder self (padding bias)": (*qkv(s, s), bias, False),
        "decoder self (causal)": (*qkv(t, t), None, True),
        "cross (padding bias)": (*qkv(t, s), bias, False),
    }


def step_fn(q, k, v, mask, causal, backend, p):
    grad = torch.randn_like(q)

    def step(_: int) -> None:
        if backend is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        else:
            with sdpa_kernel([backend]):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        out.backward(grad)

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--src", type=int, default=32)
    ap.add_argument("--tgt", type=int, default=30)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--device", default=None)
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")  # each refusing backend warns why: the refusal is reported below
    device = common.pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    env = common.environment(device)
    print(f"device {env['device']} | torch {torch.__version__}")
    rows = []
    for name, (q, k, v, mask, causal) in cases(args.batch, args.src, args.tgt, device, dtype).items():
        steps = {}
        for bname, backend in BACKENDS.items():
            step = step_fn(q, k, v, mask, causal, backend, args.dropout)
            try:
                step(0)
                common.synchronize(device)
                steps[bname] = step
            except RuntimeError as e:  # the backend refuses these inputs
                rows.append({"case": name, "backend": bname, "refused": str(e).splitlines()[0][:160]})
        timings = common.time_interleaved(steps, device, warmup=5, iters=20, rounds=3)
        for bname, tm in timings.items():
            rows.append({"case": name, "backend": bname, **tm.to_dict()})
            print(f"{name:30s} {bname:10s} {tm.median_ms * 1e3:8.1f} us  (rounds {[round(m * 1e3) for m in tm.round_medians_ms]})")
        for r in rows:
            if r["case"] == name and "refused" in r:
                print(f"{name:30s} {r['backend']:10s}  refused")
    # the host's cost of the context manager alone
    t0 = time.perf_counter()
    for _ in range(2000):
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            pass
    context_us = (time.perf_counter() - t0) / 2000 * 1e6
    print(f"sdpa_kernel enter + exit: {context_us:.1f} us on the host")
    payload = {"benchmark": "sdpa-backends", "environment": env, "args": vars(args) | {"out_dir": str(args.out_dir)},
               "rows": rows, "sdpa_kernel_context_us": context_us,
               "method": "forward + backward of one SDPA call, bf16 on CUDA, CUDA events, 3 interleaved rounds of 20"}
    suffix = f"-b{args.batch}-s{args.src}-t{args.tgt}"  # one file per size: two runs in a call do not overwrite each other
    print(f"wrote {common.write_json('sdpa-backends', payload, args.out_dir, suffix=suffix)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
