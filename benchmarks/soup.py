"""Score a uniform model soup of fine-tuned runs next to its ingredients and their ensemble.

A uniform soup (Wortsman et al. 2022, "Model soups", section 2) averages the weights of models
fine-tuned from one checkpoint with different seeds: one model, the cost of one at inference.
This script takes the output folders of ``benchmarks/finetune.py`` runs of one task (each holds
``<task>/model``), builds the soup with :func:`attnkit.training.averaging.save_averaged` (what
``attnkit average`` does), and scores on the same data (the files the task's recipe names under
``--data``), in one process:

* every ingredient (dev; WNUT-17 also test: the task's reported metric),
* the soup,
* for comparison, the ensemble of the ingredients: the mean of their softmax outputs (N models
  at inference, so N times the cost; reported, never counted against a target).

    python benchmarks/soup.py --task sst2 --data .data RUN_DIR_SEED0 RUN_DIR_SEED1 RUN_DIR_SEED2 RUN_DIR_SEED3
    python benchmarks/soup.py --task wnut17 --data .data runs/w-s*  --tag wnut-soup

The ingredients should be fine-tuned with the same ``train.init_seed`` (the default), so that their
fresh heads start from one point, and from the same checkpoint (one TAPT model, not one per seed).
The JSON goes to ``benchmarks/results/soup-<task>-<device>-<date>[-tag].json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

try:
    from benchmarks import common  # noqa: E402
    from benchmarks.finetune import TASKS, data_file, make_soup, metric_name, metric_of, model_probabilities, recipe_of  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the files beside this one
    import common  # type: ignore[no-redef]  # noqa: E402
    from finetune import (  # type: ignore[no-redef]  # noqa: E402
        TASKS, data_file, make_soup, metric_name, metric_of, model_probabilities, recipe_of,
    )


def model_dir(run: Path, task: str) -> Path:
    """``run/<task>/model`` (a finetune.py output folder), ``run/model`` (a finetune --out) or ``run`` itself."""
    for p in (run / task / "model", run / "model", run):
        if (p / "config.json").is_file():
            return p
    raise SystemExit(f"error: {run} holds no model (looked for {task}/model, model and config.json)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="finetune.py output folders (or model directories), one per ingredient")
    p.add_argument("--task", required=True, choices=[t for t in TASKS if recipe_of(t).task in ("classify", "ner")])
    p.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="the recipes' data root, with sst2/, rte/, wnut17/ (default: ../shared/data)")
    p.add_argument("--out", type=Path, default=Path("runs/soup"), help="where the soup model is written (replaced)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when present)")
    p.add_argument("--tag", default="", help="appended to the result file's name")
    p.add_argument("--out-dir", type=Path, default=None, help="folder for the JSON (default: benchmarks/results)")
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        raise SystemExit("error: a soup needs at least two runs")
    device = common.pick_device(args.device)
    target, metric = TASKS[args.task][1], metric_name(args.task)
    dev, test = data_file(args.task, "dev", args.data), data_file(args.task, "test", args.data)
    assert dev is not None and target is not None
    splits = {"dev": dev, **({"test": test} if test else {})}
    reported = "test" if test else "dev"
    ingredients = [model_dir(r, args.task) for r in args.runs]

    soup_dir = args.out / f"{args.task}-soup"
    start = time.perf_counter()
    make_soup(ingredients, soup_dir)
    soup_s = time.perf_counter() - start

    rows: list[dict[str, Any]] = []
    ensemble: dict[str, list[torch.Tensor]] = {}
    for name, path in [*((f"seed run {i}", q) for i, q in enumerate(ingredients)), ("soup", soup_dir)]:
        row: dict[str, Any] = {"name": name, "model": str(path)}
        for split, file in splits.items():
            probs, data, enc, labels = model_probabilities(path, args.task, file, device, full_length=split == "test")
            row[split] = metric_of(args.task, probs, data, enc, labels)
            if name != "soup":
                ensemble[split] = probs if split not in ensemble else [a + b for a, b in zip(ensemble[split], probs)]
                saved = path.parent / "eval.json"
                if split == "dev" and saved.is_file():  # the score the run itself reported, for a consistency check
                    row["dev_at_training"] = json.loads(saved.read_text()).get(metric)
        rows.append(row)
        print(f"{name:>12}: " + ", ".join(f"{s} {100 * row[s]:.2f}" for s in splits), flush=True)
    ens_row: dict[str, Any] = {"name": f"ensemble of {len(ingredients)} (mean softmax; {len(ingredients)}x inference)"}
    for split, file in splits.items():
        _, data, enc, labels = model_probabilities(ingredients[0], args.task, file, device, full_length=split == "test")
        ens_row[split] = metric_of(args.task, [x / len(ingredients) for x in ensemble[split]], data, enc, labels)
    rows.append(ens_row)
    print(f"{'ensemble':>12}: " + ", ".join(f"{s} {100 * ens_row[s]:.2f}" for s in splits), flush=True)

    seeds = [r[reported] for r in rows if r["name"].startswith("seed run")]
    summary = {"metric": f"{reported} {metric}", "target": target, "ingredients_mean": statistics.mean(seeds),
               "ingredients_min": min(seeds), "ingredients_max": max(seeds), "soup": rows[-2][reported],
               "ensemble": ens_row[reported], "soup_met": rows[-2][reported] >= target, "average_s": soup_s}
    payload = {"benchmark": "soup", "task": args.task, "recipe": recipe_of(args.task).name, "rows": rows, "summary": summary,
               "ingredients": [str(q) for q in ingredients],
               "environment": common.environment(device), "argv": sys.argv}
    path = common.write_json(f"soup-{args.task}", payload, args.out_dir, suffix=f"-{args.tag}" if args.tag else "")
    table = [[r["name"], *(f"{100 * r[s]:.2f}" for s in splits)] for r in rows]
    print(common.markdown_table(["model", *splits], table))
    print(f"{summary['metric']}: ingredients mean {100 * summary['ingredients_mean']:.2f} "
          f"({100 * summary['ingredients_min']:.2f}-{100 * summary['ingredients_max']:.2f}), soup {100 * summary['soup']:.2f}, "
          f"ensemble {100 * summary['ensemble']:.2f}; target {100 * target:.1f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
