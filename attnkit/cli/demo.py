"""attnkit demo: train a small encoder-decoder Transformer from scratch on a CPU (the demo recipe)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DESCRIPTION = """Train a small encoder-decoder Transformer from scratch on a CPU: the demo recipe.

The task is generated in-process: reverse a random string of 3-10 digits. The model is a
2+2-layer Transformer (d_model 64) trained with the paper's optimizer and regulariser (Adam
with beta2 0.98 and eps 1e-9, label smoothing 0.1) and a linear warm-up with cosine decay over
at most 1,200 steps; training stops once all validation strings come out right. Test strings
never seen in training are decoded greedily at the end; some are printed with the model's
answers, then the exact-match rate. Same run: attnkit train reverse --recipe demo --out DIR."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="train a tiny Transformer to reverse digit strings (about 30 seconds on a CPU)",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["reverse", "sort", "copy"], default="reverse", help="the transduction task (default: reverse)")
    p.add_argument("--out", type=Path, default=None,
                   help="where to save the model and loss plot (default: ./attnkit-demo, or attnkit-demo-2, -3, ... when it holds an earlier demo)")
    p.add_argument("--steps", type=int, default=None, help="maximum training steps (default 1,200; stops earlier at 100%% validation exact match)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data, the initial weights and the batch order (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from attnkit import recipes, runs
    from attnkit.errors import ConfigError

    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps={args.steps} must be >= 1")
    start = time.perf_counter()
    if args.device == "cpu":
        torch.set_num_threads(1)  # two small matrices per step: one thread avoids the threads' overhead
    recipe = recipes.get("demo")
    sets = [f"data.kind={args.task}", f"data.seed={args.seed}", f"train.seed={args.seed}", f"train.device={args.device}"]
    if args.steps is not None:
        sets += [f"train.steps={args.steps}", f"train.schedule.warmup={min(recipe.train.schedule.warmup, args.steps // 2)}"]  # type: ignore[attr-defined]
    job = runs.job(args.task)
    cfgs = runs.resolve_configs(job, recipe=recipe, assignments=sets)
    out = args.out if args.out is not None else free_directory(Path("attnkit-demo"))
    if args.out is not None and (out / runs.RUN_CONFIG).exists():
        raise ConfigError(f"--out {out} holds an earlier run; choose another --out (nothing there is replaced)")
    print(f"attnkit demo: {args.task} digit strings -> {out}")
    report = runs.run(job, cfgs, out, progress=not args.no_progress, recipe=recipe.name)
    d = cfgs["data"]
    test_in, test_out = report.state["test"]
    preds = report.state["predictions"]
    print(f"{'input':<12} {'expected':<12} {'model':<12}")
    for s, a, p in list(zip(test_in, test_out, preds))[:8]:
        print(f"{s:<12} {a:<12} {p:<12} {'ok' if a == p else 'WRONG'}")
    print(f"loss curve in {out / 'loss.png'} ({time.perf_counter() - start:.0f}s total, {d.n_test} test strings)")  # type: ignore[attr-defined]
    print(f"held-out exact match: {report.final['test_exact_match']:.3f}")
    return 0


def free_directory(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that holds no earlier run."""
    from attnkit.runs import RUN_CONFIG

    candidate, n = base, 1
    while (candidate / RUN_CONFIG).exists() or (candidate.exists() and not candidate.is_dir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate
