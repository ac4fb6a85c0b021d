"""Training-step speed of each positional kind against learned absolute positions on SDPA.

    python benchmarks/positions_speed.py                 # GPU: B=4, H=12, d=64, T=2048, bf16, 12 layers
    python benchmarks/positions_speed.py --quick         # CPU smoke: tiny sizes

One process, the same GPT (``d_model = H * d``) and the same batches for every row; each row is one
``model.attention.position.kind``, ``learned`` the model's learned absolute positions (the baseline, whose
attention is SDPA's causal kernel). A step is forward + backward of the next-token loss under bf16
autocast on CUDA. Rows are timed interleaved (:func:`benchmarks.common.time_interleaved`); ``ratio`` is
the baseline's median step time over the row's (>= 0.9 is the goal). A second table times one attention
layer alone (``MultiHeadAttention``, forward + backward), where ALiBi and T5 take FlexAttention with a
``score_mod`` on CUDA. Before timing, each kind's fast path is checked against its dense reference path
(``need_weights=True``) on the same inputs. Writes ``benchmarks/results/positions-speed-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.attention import MultiHeadAttention  # noqa: E402
from attnkit.models.gpt import GPT, GPTConfig  # noqa: E402
from attnkit.models.transformer import AttentionConfig  # noqa: E402
from attnkit.positions.config import PositionConfig  # noqa: E402
from benchmarks.common import environment, pick_device, time_interleaved, write_json  # noqa: E402

KINDS = ["learned", "rotary", "alibi", "t5_bias", "relative_key", "relative_key_query", "xl_relative"]


def position(kind: str) -> PositionConfig:
    return PositionConfig(kind="none" if kind == "learned" else kind)  # type: ignore[arg-type]


def model_steps(args: argparse.Namespace, device: torch.device) -> dict[str, Callable[[int], None]]:
    """One GPT per kind, same initial weights where shared, and one step function each."""
    ids = [torch.randint(0, args.vocab, (args.batch, args.length + 1), device=device) for _ in range(4)]
    steps = {}
    for kind in args.kinds:
        torch.manual_seed(0)
        config = GPTConfig(vocab_size=args.vocab, context=args.length, d_model=args.heads * args.head_dim, n_heads=args.heads,
                           n_layers=args.layers, attention=AttentionConfig(position=position(kind)))
        model = GPT(config).to(device)
        fn: Callable[..., Any] = torch.compile(model) if args.compile else model

        def step(i: int, model: GPT = model, fn: Callable[..., Any] = fn) -> None:
            x = ids[i % len(ids)]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = fn(x[:, :-1]).logits
            F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten()).backward()
            for p in model.parameters():
                p.grad = None

        steps[kind] = step
    return steps


def layer_steps(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Callable[[int], None]], dict[str, float]]:
    """One attention layer per kind (learned: no positional hook), and each fast path's largest difference
    from the dense reference path."""
    d_model = args.heads * args.head_dim
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    xs = [torch.randn(args.batch, args.length, d_model, device=device, dtype=dtype, requires_grad=True) for _ in range(2)]
    steps, errors = {}, {}
    for kind in args.kinds:
        torch.manual_seed(0)
        m = MultiHeadAttention(d_model, args.heads, position=None if kind == "learned" else position(kind)).to(device, dtype)
        with torch.no_grad():
            x = xs[0][:, : min(args.length, 512)]
            errors[kind] = (m(x, causal=True)[0].float() - m(x, causal=True, need_weights=True)[0].float()).abs().max().item()

        def step(i: int, m: MultiHeadAttention = m) -> None:
            x = xs[i % len(xs)]
            m(x, causal=True)[0].float().square().mean().backward()
            x.grad = None
            for p in m.parameters():
                p.grad = None

        steps[kind] = step
    return steps, errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny CPU sizes")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--kinds", nargs="*", default=KINDS, choices=KINDS)
    p.add_argument("--compile", action="store_true", help="torch.compile each model")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out-dir", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.heads, args.head_dim, args.length, args.layers, args.vocab = 2, 2, 16, 64, 1, 64
        args.warmup, args.iters, args.rounds = 1, 2, 2
    device = pick_device(args.device)
    result: dict[str, Any] = {"benchmark": "positions-speed", "environment": environment(device),
                              "command": " ".join([sys.executable, *sys.argv]),
                              "shape": {k: getattr(args, k) for k in ("batch", "heads", "head_dim", "length", "layers", "vocab")},
                              "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32", "compile": args.compile}
    for table, (steps, errors) in (("layer", layer_steps(args, device)), ("model", (model_steps(args, device), None))):
        timings = time_interleaved(steps, device, warmup=args.warmup, iters=args.iters, rounds=args.rounds)
        base = timings["learned"].median_ms if "learned" in timings else None
        rows = {}
        for kind, t in timings.items():
            rows[kind] = {"median_ms": round(t.median_ms, 4), "round_medians_ms": [round(x, 4) for x in t.round_medians_ms],
                          "ratio_vs_learned": None if base is None else round(base / t.median_ms, 3)}
            if errors is not None:
                rows[kind]["fast_vs_dense_max_abs"] = errors[kind]
            print(f"{table:>5} {kind:>18}: {t.median_ms:9.3f} ms" + ("" if base is None else f"  x{base / t.median_ms:.2f} of learned"))
        result[table] = rows
    path = write_json("positions-speed" + ("-quick" if args.quick else ""), result, Path(args.out_dir) if args.out_dir else None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
