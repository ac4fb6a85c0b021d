"""Where the host's time goes in a training step of the Multi30k recipe (attnkit and the twin),
by Python function (cProfile), on the device the step runs on.

    python benchmarks/host_profile.py [--steps 50] [--top 30]

On a GPU the step is host-bound when the host takes longer to issue its kernels than the GPU
takes to run them (BENCHMARKS.md, ``translate.py``, session 7). cProfile's ``tottime`` of a
built-in torch call is the host time of issuing it (dispatch and kernel launch), and the Python
functions around them show what attnkit's modules add. Synthetic batch of the recipe's shape:
256 sentences, 32 source and 30 target tokens, vocabulary 8,000. cProfile slows Python code
down, so compare the entries with each other, not with the step times of ``translate.py``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import pstats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from benchmarks import common  # noqa: E402
except ImportError:
    import common  # type: ignore[no-redef]  # noqa: E402

import translate  # noqa: E402

import attnkit  # noqa: E402
from attnkit.cli.common import apply_overrides  # noqa: E402
from attnkit.data.seq2seq import Seq2SeqBatch  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--device", default=None)
    ap.add_argument("--shape", type=int, nargs=3, default=None, metavar=("B", "S", "T"),
                    help="sentences, source and target tokens of the batch (default 256 32 30 on CUDA)")
    ap.add_argument("--no-profile", action="store_true", help="time the steps only (no cProfile tables)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the recipe's model config")
    args = ap.parse_args(argv)
    device = common.pick_device(args.device)
    mc = translate.RECIPE["model"]
    p = mc.dropout
    cfg = dataclasses.replace(mc, src_vocab_size=8000, tgt_vocab_size=8000,
                              attention=dataclasses.replace(mc.attention, dropout=p), activation_dropout=p)
    if args.set:
        cfg = apply_overrides([f"model.{s}" for s in args.set], {"model": cfg})["model"]
    torch.manual_seed(0)
    b, s, t = args.shape or ((256, 32, 30) if device.type == "cuda" else (8, 12, 10))
    src = torch.randint(3, 8000, (b, s), device=device)
    src[: b // 4, -s // 4:] = 0  # a quarter of the sources padded
    tgt = torch.randint(3, 8000, (b, t + 1), device=device)
    batch = Seq2SeqBatch(src=src, tgt_in=tgt[:, :-1], tgt_out=tgt[:, 1:])
    models = {"attnkit": attnkit.Transformer(cfg).to(device), "torch.nn.Transformer": translate.TorchTranslator(cfg).to(device)}
    print(f"device {common.device_name(device)} | torch {torch.__version__}")
    for name, model in models.items():
        step = translate.train_step_fn(model, translate.LOGITS[name], [batch], 0.1, device)
        for i in range(10):
            step(i)
        common.synchronize(device)
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        common.synchronize(device)
        plain = (time.perf_counter() - t0) / args.steps * 1e3
        if args.no_profile:
            print(f"{name}: {plain:.2f} ms per step, batch {b} x {s} / {t}")
            continue
        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.steps):
            step(i)
        common.synchronize(device)
        prof.disable()
        out = io.StringIO()
        stats = pstats.Stats(prof, stream=out)
        print(f"\n== {name}: {plain:.2f} ms per step without the profiler; totals over {args.steps} profiled steps below")
        stats.sort_stats("tottime").print_stats(args.top)
        text = out.getvalue()
        print(text[text.index("   ncalls"):] if "   ncalls" in text else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
