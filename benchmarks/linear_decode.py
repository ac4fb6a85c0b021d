"""Causal decoding cost per token up to 64k tokens: linear attention as an RNN against a softmax KV cache.

    python benchmarks/linear_decode.py                      # CPU or GPU, 65,536 new tokens
    python benchmarks/linear_decode.py --tokens 4096 --quick   # smoke run

Issue 6's target: "constant memory per generated token in causal decoding up to 64k tokens"
for ``linear`` (Katharopoulos et al. 2020, section 3.4). Two small GPTs of the same size, one
with ``linear`` attention (decoded through :class:`attnkit.attention.linear.RecurrentCache`, a
fixed-size state per layer) and one with ``scaled_dot`` (a KV cache that holds every past
position), generate greedily from a 16-token prompt, one token per step, the next token fed
back on the device (no host sync per token). The time of each block of ``--block`` tokens is
recorded, with the bytes the caches hold at the end of the block (the recurrent states'
``nbytes``; for the KV cache, the positions in use times their keys and values). Random
weights: only cost is measured. JSON under ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from attnkit.models.gpt import GPT, gpt_preset  # noqa: E402
from attnkit.models.transformer import AttentionConfig  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks"
    import common  # type: ignore[no-redef]  # noqa: E402

PROMPT = 16


def cache_bytes(caches: list[Any]) -> int:
    total = 0
    for c in caches:
        if hasattr(c, "nbytes"):  # RecurrentCache: the state
            total += c.nbytes()
        elif c.k is not None:  # KVCache: the positions in use
            per_pos = c.k[:, :, :1].nbytes + c.v[:, :, :1].nbytes
            total += per_pos * c.length
    return total


def run(kind: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    cfg = gpt_preset("gpt-tiny", n_layers=args.layers, d_model=args.d_model, n_heads=args.heads, vocab_size=256,
                     context=PROMPT + args.tokens, attention=AttentionConfig(kind=kind), dropout=0.0)
    model = GPT(cfg).to(device).eval()
    caches = model.new_caches()
    prompt = torch.randint(0, 256, (1, PROMPT), device=device)
    blocks = []
    with torch.no_grad():
        token = model(prompt, caches=caches).logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
        common.synchronize(device)
        t0 = time.perf_counter()
        for i in range(args.tokens - 1):
            token = model(token, caches=caches).logits[:, -1].argmax(-1, keepdim=True)
            if (i + 1) % args.block == 0:
                common.synchronize(device)
                now = time.perf_counter()
                blocks.append({"tokens": i + 1, "ms_per_token": (now - t0) * 1e3 / args.block, "cache_bytes": cache_bytes(caches)})
                t0 = now
    first, last = blocks[0], blocks[-1]
    return {
        "kind": kind, "parameters": sum(p.numel() for p in model.parameters()), "blocks": blocks,
        "ms_per_token_first_block": first["ms_per_token"], "ms_per_token_last_block": last["ms_per_token"],
        "time_growth_last_over_first": last["ms_per_token"] / first["ms_per_token"],
        "cache_bytes_first_block": first["cache_bytes"], "cache_bytes_last_block": last["cache_bytes"],
        "cache_growth_last_over_first": last["cache_bytes"] / max(first["cache_bytes"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=65_536, help="new tokens (default 65,536)")
    ap.add_argument("--block", type=int, default=4096, help="tokens per timed block (default 4,096)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kinds", default="linear,scaled_dot")
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="2,048 tokens in blocks of 512")
    ap.add_argument("--results", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.tokens, args.block = min(args.tokens, 2048), 512
    device = common.pick_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = {}
    for kind in args.kinds.split(","):
        start = time.perf_counter()
        rows[kind] = run(kind, args, device)
        rows[kind]["wall_s"] = time.perf_counter() - start
        r = rows[kind]
        print(f"{kind}: {r['ms_per_token_first_block']:.3f} -> {r['ms_per_token_last_block']:.3f} ms/token "
              f"(x{r['time_growth_last_over_first']:.2f}); cache {r['cache_bytes_first_block']:,} -> {r['cache_bytes_last_block']:,} bytes "
              f"(x{r['cache_growth_last_over_first']:.1f}); {r['wall_s']:.0f} s", flush=True)
    payload = {"benchmark": "linear-decode", "tokens": args.tokens, "block": args.block, "prompt": PROMPT,
               "model": {"layers": args.layers, "d_model": args.d_model, "heads": args.heads}, "rows": rows,
               "environment": common.environment(device), "quick": args.quick}
    path = common.write_json("linear-decode", payload, args.results, suffix="-quick" if args.quick else "")
    header = ["kind"] + [f"{b['tokens']:,}" for b in next(iter(rows.values()))["blocks"]]
    print(common.markdown_table(header + ["cache bytes at the end"],
                                [[k] + [f"{b['ms_per_token']:.3f}" for b in r["blocks"]] + [f"{r['cache_bytes_last_block']:,}"]
                                 for k, r in rows.items()]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
