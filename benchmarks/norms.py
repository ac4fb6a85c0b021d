"""Why LayerNorm and not BatchNorm: the Multi30k German -> English model trained with each normalisation.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed), with the corpus
copied inside the tree (``.data/`` is git-ignored):

    mkdir -p .data && cp -r ../shared/data/multi30k .data/
    python benchmarks/norms.py --data .data/multi30k                      # one GPU: 3 norms x 2 batch sizes
    python benchmarks/norms.py --data .data/multi30k --divisors 8 32      # a second, smaller batch as well
    python benchmarks/norms.py --data .data/multi30k --quick --device cpu # tiny CPU smoke run; scores mean nothing

Each normalisation is a recipe: ``multi30k-de-en`` (``model.norm=layer``, Ba et al. 2016),
``multi30k-de-en-norm-rms`` (RMSNorm, Zhang & Sennrich 2019) and ``multi30k-de-en-norm-batch``
(BatchNorm over the real tokens of the batch, Ioffe & Szegedy 2015, with running statistics in
evaluation; :mod:`attnkit.layers.batchnorm`). They differ in ``model.norm`` only. Every run goes through
:func:`attnkit.runs.run`, as ``attnkit train translate --recipe NAME`` runs it (the run function of
``benchmarks/exposure_bias.py``), and reports:

* **test BLEU**: the averaged model translates ``test_2016_flickr`` (``val`` with ``--quick``) with the
  recipe's beam search, scored with sacreBLEU cased and lowercased, as ``benchmarks/translate.py`` does;
* **the validation-loss curve**: the run's logged evaluations (``eval/loss`` of ``metrics.jsonl``, every
  ``train.eval.every`` steps; in evaluation BatchNorm uses its running statistics), and the validation
  loss of the averaged model;
* **wall time** of the whole run: tokenizer, data, training, evaluations, averaging, test translation;
* **the norm layers** of the saved model, counted by class (the batch-norm rows hold
  ``MaskedBatchNorm`` layers and no ``LayerNorm``).

**Batch-size sensitivity.** Each norm is also trained with ``data.max_tokens`` divided by each of
``--divisors`` (default 8: about 1,024 tokens, some 60 sentence pairs, per batch instead of 8,192) for
the same number of steps and the same learning-rate schedule, so a small-batch run sees 1/divisor of the
sentence pairs the full one sees. Equal steps isolate what the batch's size does to the statistics
BatchNorm normalises with (and to the gradient noise every norm sees); equal examples would take
``divisor`` times the steps. Validation batches hold the same smaller budget (the loss per token does
not depend on it: evaluation normalises with fixed statistics). The table sets each small-batch row
against the full batch of the same norm.

Results go to ``benchmarks/results/norms-<device>-<date>.json``, written after every run. A file of that
device and date is read first and a run of the same norm and divisor replaces its row there, so norms
and batch sizes may run in separate calls (``--norms``, ``--divisors``, ``--parts``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from attnkit.layers.norm import NORMS  # noqa: E402

try:
    from benchmarks import common, exposure_bias, translate  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the files beside this one
    import common  # type: ignore[no-redef]  # noqa: E402
    import exposure_bias  # type: ignore[no-redef]  # noqa: E402
    import translate  # type: ignore[no-redef]  # noqa: E402

BASE = translate.RECIPE  # multi30k-de-en: the LayerNorm row
RECIPES = {norm: BASE if norm == "layer" else f"{BASE}-norm-{norm}" for norm in NORMS}
PARTS = ("full", "small")


def logged_evals(work: Path) -> list[dict[str, Any]]:
    """The run's evaluations from ``work/metrics.jsonl``: ``[{"step", "loss", ...}]`` in step order."""
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [{"step": r["step"], **{k.removeprefix("eval/"): v for k, v in r.items() if k.startswith("eval/")}}
            for r in records if any(k.startswith("eval/") for k in r)]


def norm_layers(model_dir: Path) -> dict[str, int]:
    """How many modules of each normalisation class the saved model holds (``LayerNorm``, ``RMSNorm``, ``MaskedBatchNorm``)."""
    import attnkit

    model = attnkit.load(model_dir)
    return dict(Counter(type(m).__name__ for m in model.modules() if "Norm" in type(m).__name__))


def one_norm_run(norm: str, divisor: int, args: argparse.Namespace, device: torch.device, work: Path) -> dict[str, Any]:
    """Train and score ``norm``'s recipe with ``data.max_tokens`` divided by ``divisor`` (1: the recipe's batch).

    The run is :func:`exposure_bias.one_run` (the recipe through :func:`attnkit.runs.run`) with the smaller budget added
    to ``--set``; its logged evaluations, final scores and saved model are read from ``work``.

    Returns:
        The row of the JSON: scores, wall time, the validation-loss curve and the saved model's norm layers.
    """
    full = translate.recipe_configs(args, device)["data"].max_tokens
    max_tokens = max(full // divisor, 1)
    extra = [] if divisor == 1 else [f"data.max_tokens={max_tokens}"]
    run_args = argparse.Namespace(**{**vars(args), "set": [*args.set, *extra]})
    row = exposure_bias.one_run(RECIPES[norm], args.seed, run_args, device, work)
    evals = logged_evals(work)
    final = json.loads((work / "eval.json").read_text())
    return {
        "norm": norm, "recipe": RECIPES[norm], "divisor": divisor, "max_tokens": max_tokens, "steps": row["steps"],
        "overrides": [*args.set, *extra], "seed": args.seed, "seconds": row["seconds"], "train_loop_s": final["seconds"],
        "bleu": row["bleu"], "bleu_lc": row["bleu_lc"], "bleu_signature": row["bleu_signature"],
        "valid_loss_averaged": final.get("valid_loss"),
        "valid_loss_last_eval": evals[-1]["loss"] if evals else None,
        "evals": evals, "norm_layers": norm_layers(work / "model"),
        "model": translate.run_config(work)["model"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per norm and batch, the small batches set against the full one of the same norm."""
    full = {r["norm"]: r for r in rows if r["divisor"] == 1}
    diff = lambda r, k: "-" if r["divisor"] == 1 or r["norm"] not in full else f"{r[k] - full[r['norm']][k]:+.2f}"  # noqa: E731
    loss = lambda v: "-" if v is None or not math.isfinite(v) else f"{v:.3f}"  # noqa: E731
    body = [[r["norm"], f"{r['max_tokens']:,}" + ("" if r["divisor"] == 1 else f" (1/{r['divisor']})"), str(r["steps"]),
             f"{r['bleu']:.2f}", f"{r['bleu_lc']:.2f}", diff(r, "bleu"), loss(r["valid_loss_last_eval"]),
             loss(r["valid_loss_averaged"]), f"{r['seconds']:.0f}"]
            for r in sorted(rows, key=lambda r: (NORMS.index(r["norm"]), r["divisor"]))]
    return common.markdown_table(["norm", "tokens per batch", "steps", "test BLEU", "lowercased", "vs full batch",
                                  "last val loss", "averaged val loss", "wall s"], body)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(".data/multi30k"), help="Multi30k directory (default .data/multi30k)")
    p.add_argument("--norms", nargs="+", default=list(NORMS), choices=NORMS, help="which norms (default all three)")
    p.add_argument("--divisors", type=int, nargs="+", default=[8],
                   help="the small batches: data.max_tokens divided by each, same steps (default 8)")
    p.add_argument("--parts", type=lambda t: common.parse_parts(t, PARTS), default=list(PARTS),
                   help="full (the recipe's batch), small (the --divisors batches) or all (default)")
    p.add_argument("--seed", type=int, default=0, help="train.seed of every run (default 0)")
    p.add_argument("--quick", action="store_true", help="the recipes' quick variants: a CPU smoke run, scores mean nothing")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when present)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override applied to every run (repeatable)")
    p.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default benchmarks/results)")
    args = p.parse_args(argv)
    if any(d < 2 for d in args.divisors):
        p.error(f"--divisors {' '.join(map(str, args.divisors))}: each must be at least 2 (1 is the full batch, --parts full)")
    if not (args.data / "train.de.gz").is_file() and not (args.data / "train.de").is_file():
        p.error(f"no Multi30k at {args.data}; copy it there: mkdir -p .data && cp -r ../shared/data/multi30k .data/")
    device = common.pick_device(args.device)
    env = common.environment(device)
    suffix = "-quick" if args.quick else ""
    payload = common.read_day_json("norms", env, args.out_dir, suffix=suffix)  # rows of earlier calls that day
    rows: list[dict[str, Any]] = payload.get("runs", [])
    payload.update(benchmark="norms", quick=args.quick, environment=env, recipes=RECIPES, runs=rows,
                   small_batch="data.max_tokens divided by the divisor; same train.steps and schedule as the full batch")
    divisors = ([1] if "full" in args.parts else []) + (sorted(set(args.divisors)) if "small" in args.parts else [])
    with tempfile.TemporaryDirectory(prefix="norms-") as tmp:
        for divisor in divisors:
            for norm in args.norms:
                row = one_norm_run(norm, divisor, args, device, Path(tmp) / f"{norm}-{divisor}")
                row["command"] = env["command"]  # rows of separate calls merge into one file: each keeps the call that made it
                rows[:] = [r for r in rows if (r["norm"], r["divisor"]) != (norm, divisor)] + [row]
                payload["table"] = table(rows)
                path = common.write_json("norms", payload, args.out_dir, suffix=suffix)  # kept if a later run is cut short
                print(f"{norm}, {row['max_tokens']} tokens per batch: test BLEU {row['bleu']:.2f} (lc {row['bleu_lc']:.2f}), "
                      f"validation loss {row['valid_loss_averaged']:.3f} averaged, {row['seconds']:.0f} s; wrote {path}", flush=True)
    print(payload.get("table", ""))
    path = common.results_path("norms", env, args.out_dir, suffix=suffix)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
