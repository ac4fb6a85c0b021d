"""Multi30k German -> English: each exposure-bias remedy against teacher forcing, same steps.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/exposure_bias.py --data ../shared/data/multi30k --seeds 0 1 2      # one GPU
    python benchmarks/exposure_bias.py --data ../shared/data/multi30k --quick            # tiny CPU smoke run

For every seed, the ``multi30k-de-en`` recipe (teacher forcing) and ``multi30k-de-en-scheduled``,
``-self-feed`` and ``-adversarial`` (:mod:`attnkit.training.exposure`) are run through
:func:`attnkit.runs.run`, as ``attnkit train translate --recipe NAME`` runs them: the same model,
data, steps, checkpoint averaging and beam search; only ``train.exposure`` differs (and the
teacher-forced recipe's steps are replayed as CUDA graphs on a GPU, which changes the speed, not
what is computed). Each averaged model translates ``test_2016_flickr`` (``val`` with ``--quick``)
and is scored with sacreBLEU, cased and lowercased, over the whole split and over its thirds by
source length (:func:`attnkit.metrics.bleu_by_length`): exposure bias is expected to cost most on
the longest third. The JSON under ``benchmarks/results/`` holds every run's scores, the mean over
seeds of each recipe and its difference from teacher forcing. It is written after each run; a file of
that device and date is read first, a run of the same recipe and seed replaces its row there and the
means are taken over every row the file then holds, so seeds and remedies may run in separate calls
(``--no-teacher-forcing`` leaves out the teacher-forced run that an earlier call of the day already made).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from attnkit import recipes, runs  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

BASE = "multi30k-de-en"
REMEDIES = ("scheduled", "self-feed", "adversarial")


def one_run(name: str, seed: int, args: argparse.Namespace, device: Any, work: Path) -> dict[str, Any]:
    """Train and score the recipe ``name`` with ``train.seed=seed``; its final scores and wall time."""
    cfgs = runs.resolve_configs(
        runs.job("translate"), recipe=recipes.get(name, "translate"), quick=args.quick, cuda=device.type == "cuda",
        assignments=[f"data.data={json.dumps(str(args.data))}", f"train.device={device}", f"train.seed={seed}", *args.set],
    )
    t0 = time.perf_counter()
    report = runs.run(runs.job("translate"), cfgs, work, progress=False, recipe=name)
    seconds = time.perf_counter() - t0
    final = report.final
    thirds = final["test_bleu_by_length"]
    return {
        "recipe": name, "seed": seed, "seconds": seconds, "steps": cfgs["train"].steps,
        "exposure": cfgs["train"].exposure.to_dict(),
        "bleu": final["test_bleu"], "bleu_lc": final["test_bleu_lc"], "bleu_signature": final["test_bleu_signature"],
        "longest_third_bleu": thirds[-1]["bleu"], "longest_third_bleu_lc": thirds[-1]["bleu_lc"], "by_length": thirds,
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (and spread) over seeds per recipe, and the difference of each mean from teacher forcing."""
    keys = ("bleu", "bleu_lc", "longest_third_bleu", "longest_third_bleu_lc")
    out: list[dict[str, Any]] = []
    for name in dict.fromkeys(r["recipe"] for r in rows):
        mine = sorted((r for r in rows if r["recipe"] == name), key=lambda r: r["seed"])
        entry: dict[str, Any] = {"recipe": name, "seeds": [r["seed"] for r in mine]}
        for k in keys:
            values = [r[k] for r in mine]
            entry[k] = statistics.fmean(values)
            entry[f"{k}_stdev"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    base = next((e for e in out if e["recipe"] == BASE), None)
    for e in out:
        for k in keys:
            e[f"{k}_vs_teacher_forcing"] = e[k] - base[k] if base is not None else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the Multi30k directory ({train,val,test_2016_flickr}.{de,en}.gz)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--remedies", nargs="+", default=list(REMEDIES), choices=REMEDIES)
    p.add_argument("--no-teacher-forcing", action="store_true",
                   help="run only the remedies: the teacher-forced rows of these seeds come from the day's file (an earlier call)")
    p.add_argument("--quick", action="store_true", help="the recipes' quick variants (a CPU smoke run; scores mean nothing)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: CUDA when present)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override applied to every recipe")
    p.add_argument("--out-dir", type=Path, default=None)
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    env = common.environment(device)
    names = [*([] if args.no_teacher_forcing else [BASE]), *(f"{BASE}-{r}" for r in args.remedies)]
    suffix = "-quick" if args.quick else ""
    payload: dict[str, Any] = {}

    def add(row: dict[str, Any]) -> None:
        """Put ``row`` into the day's file, keeping the runs other calls (earlier or concurrent) wrote there."""
        def update(disk: dict[str, Any]) -> None:
            rows = [r for r in disk.get("runs", []) if (r["recipe"], r["seed"]) != (row["recipe"], row["seed"])] + [row]
            disk.update(quick=args.quick, runs=rows, seeds=sorted({r["seed"] for r in rows}),
                        summary=summarise(rows))
            payload.clear()
            payload.update(disk)

        common.update_day_json("exposure-bias", env, update, args.out_dir, suffix=suffix)

    with tempfile.TemporaryDirectory(prefix="exposure-") as tmp:
        for seed in args.seeds:
            for name in names:
                row = one_run(name, seed, args, device, Path(tmp) / f"{name}-{seed}")
                row["command"] = env["command"]  # rows of separate calls merge into one file: each keeps the call that made it
                print(f"{name} seed {seed}: BLEU {row['bleu']:.2f} (lc {row['bleu_lc']:.2f}), "
                      f"longest third {row['longest_third_bleu']:.2f}, {row['seconds']:.0f} s", flush=True)
                add(row)  # kept if a later run is cut short
    header = ["recipe", "BLEU", "vs TF", "longest third", "vs TF"]
    diff = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731 (no teacher-forced run to compare with)
    table = [[e["recipe"], f"{e['bleu']:.2f}", diff(e["bleu_vs_teacher_forcing"]), f"{e['longest_third_bleu']:.2f}",
              diff(e["longest_third_bleu_vs_teacher_forcing"])] for e in payload.get("summary", [])]
    print(common.markdown_table(header, table))
    print(f"wrote {common.results_path('exposure-bias', env, args.out_dir, suffix=suffix)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
