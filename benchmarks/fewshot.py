"""Few-shot SST-2 and RTE under the LM-BFF protocol: standard fine-tuning, PET, P-tuning and zero-shot.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/fewshot.py --data DATA                              # one GPU: SST-2 and RTE, every method
    python benchmarks/fewshot.py --data DATA --tasks rte --methods pet,finetune
    python benchmarks/fewshot.py --data DATA --tasks sst2 --methods pet,finetune,zero-shot --tapt-set train.steps=4000
    python benchmarks/fewshot.py --data DATA --quick --device cpu          # smoke run: 4 shots, 2 seeds, 2 steps a model

``DATA/sst2/{train,dev}.tsv`` and ``DATA/rte/{train,dev}.tsv`` are the GLUE files the recipes
read. all-MiniLM-L6-v2 (the packaged model) ships without a masked-LM head, so every task first
runs its task-adaptive masked-LM stage (the ``sst2-tapt`` / ``rte-tapt`` recipe: 1,000 steps on
the task's unlabelled training sentences), which trains one; every method then starts from that
one adapted model. Without the stage the patterns would query an untrained head and PET's and
the zero-shot figures would mean nothing.

Protocol (Gao et al. 2021, section 3): for each of ``--seeds`` seeds, 16 training examples per
class and a dev set of 16 per class are drawn from the training file; each model is chosen on
that dev set and scored on the GLUE dev file; the figure is the mean and standard deviation of
the test accuracy over the seeds. The methods run the ``sst2-pet`` / ``rte-pet`` recipes:

* ``finetune``: a fresh classifier on the adapted encoder (``data.method=finetune``);
* ``pet``: one masked LM per pattern, their ensemble distilled into a classifier on the
  training file's other rows (Schick & Schütze 2021); the ensemble's accuracy is recorded too;
* ``pet-lm``: ``pet`` with the paper's auxiliary masked-LM loss on those rows (section 3.1,
  ``data.lm_alpha=1e-4``, 3 unlabelled rows per labelled one);
* ``ptuning``: P-tuning's prompt encoder (20 virtual tokens, an LSTM) before the first pattern
  on the frozen masked LM, learning rate ``PTUNING_LR`` (Liu et al. 2021);
* ``autoprompt``: one pattern whose 3 trigger tokens AutoPrompt finds on each seed's training set
  (Shin et al. 2020), then fine-tuned as a PET pattern;
* ``zero-shot``: the patterns' untrained scores, recorded by every PET run (no training), as they are and
  calibrated by each label word's mean score over unlabelled rows (``calibrated_mean``; Zhao et al. 2021).

The goal the figures are checked against: prompt-based (PET, with or without the auxiliary loss) at least
10 points above standard fine-tuning on SST-2 and 5 on RTE. Results go to ``benchmarks/results/fewshot-<device>-<date>.json``,
written after each task's adaptation and each method's run (every seed of it); a file of that device and
date is read first and only the methods run are replaced, with the PET-minus-fine-tuning comparison
recomputed over what the file then holds, so tasks and methods may run in separate calls. Each task
records its settings (shots, seeds, quick); a task's earlier methods are kept only under this call's
settings, so concurrent calls with other ``--shots`` keep their tasks apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

METHODS = ("finetune", "pet", "pet-lm", "ptuning", "autoprompt", "zero-shot")
PET_METHODS = ("pet", "pet-lm")  # the prompt-based methods the goal is checked on
PET_LM_ALPHA = 1e-4  # PET, section 3.1
GOAL = {"sst2": 10.0, "rte": 5.0}  # points PET must gain over standard fine-tuning
PTUNING_LR = 3e-3
QUICK = ["data.shots=4", "data.seeds=2", "data.limit=80", "data.eval_limit=16", "data.unlabeled_limit=16", "data.max_len=32",
         "train.steps=2", "train.eval.every=1", "train.batch_size=4", "train.log_every=1"]


def method_assignments(method: str) -> list[str]:
    """The ``--set`` assignments that turn the ``TASK-pet`` recipe into ``method``."""
    if method == "finetune":
        return ["data.method=\"finetune\""]
    if method == "ptuning":
        return ["peft.method=\"ptuning\"", "peft.n_virtual=20", "data.distill=false", f"train.optim.lr={PTUNING_LR}"]
    if method == "autoprompt":
        return ["data.patterns=[\"auto\"]", "data.distill=false"]
    if method == "pet-lm":
        return [f"data.lm_alpha={PET_LM_ALPHA}"]
    return []


def compare(out: dict[str, Any], task: str) -> dict[str, Any]:
    """Set each PET method's gain over standard fine-tuning (``pet_minus_finetune``, ``pet-lm_minus_finetune``) and
    whether the better one meets :data:`GOAL`, for the methods in ``out``."""
    for key in ("goal_points", "goal_met", *(f"{m}_minus_finetune" for m in PET_METHODS)):
        out.pop(key, None)
    gains = {m: out[m]["accuracy_mean"] - out["finetune"]["accuracy_mean"] for m in PET_METHODS if m in out and "finetune" in out}
    out.update({f"{m}_minus_finetune": gain for m, gain in gains.items()})
    if gains:
        out["goal_points"] = GOAL[task]
        out["goal_met"] = max(gains.values()) >= GOAL[task]
    return out


def with_settings(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with each task's settings (quick, shots, seeds) inside its results, where a file written with one
    set of settings for the whole file keeps them at the top level; returns ``payload``, changed in place."""
    top = {k: payload.pop(k) for k in ("quick", "shots", "seeds") if k in payload}
    payload.pop("command", None)
    for result in payload.get("results", {}).values():
        result.setdefault("settings", top)
    return payload


def run_task(task: str, methods: list[str], data: Path, work: Path, device: str, quick: bool, shots: int, seeds: int,
             log: Any, out: dict[str, Any] | None = None, save: Callable[[], None] = lambda: None,
             tapt_sets: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Adapt the encoder to ``task``, then run each method on every seed.

    Args:
        out: the task's results so far (an earlier call's, from the day's JSON); updated in place.
        save: called after the adaptation and after each method's run.
        tapt_sets: ``--set`` assignments of the adaptation stage (``--tapt-set``).

    Returns:
        ``out``: per method the mean, spread and per-seed test accuracy, and the comparison of :func:`compare`.
    """
    from attnkit import recipes
    from attnkit.runs import job
    from attnkit.runs.path import resolve_configs, run, run_stages

    recipe = recipes.get(f"{task}-pet")
    common_sets = [f"train.device={json.dumps(device)}", *(QUICK if quick else [f"data.shots={shots}", f"data.seeds={seeds}"])]
    t0 = time.perf_counter()
    fed = run_stages(recipe, work / task, quick=quick, root=data, progress=False, log=log, assignments=common_sets,
                     stage_assignments=tapt_sets)
    out = {} if out is None else out
    out.update(adaptation_s=round(time.perf_counter() - t0, 1), adapted_model=fed[0].split("=", 1)[1].strip("\""))
    save()
    trained = [m for m in methods if m != "zero-shot"] or ["pet"]  # zero-shot is read from the PET run
    if "zero-shot" in methods and "pet" not in trained:
        trained.append("pet")
    for method in trained:
        sets = [*fed, *common_sets, *method_assignments(method)]
        if method == "ptuning":
            sets.append(f"data.patterns={json.dumps([recipe.data.patterns[0]])}")  # type: ignore[attr-defined]
        j = job("fewshot")
        cfgs = resolve_configs(j, recipe=recipe, assignments=sets, root=data, quick=False, log=log)
        t0 = time.perf_counter()
        report = run(j, cfgs, work / task / method, progress=False, recipe=recipe.name, log=log)
        f = report.final
        seeds_file = json.loads((work / task / method / "seeds.json").read_text())
        row: dict[str, Any] = {"accuracy_mean": 100 * f["accuracy_mean"], "accuracy_std": 100 * f["accuracy_std"],
                               "per_seed": [100 * s["accuracy"] for s in seeds_file], "wall_s": round(time.perf_counter() - t0, 1),
                               "lr": cfgs["train"].optim.lr, "steps": cfgs["train"].steps}  # type: ignore[attr-defined]
        if method == "autoprompt":
            row["triggers"] = [s.get("autoprompt_triggers") for s in seeds_file]
        if method in PET_METHODS:
            row["ensemble_mean"] = 100 * f["ensemble_accuracy_mean"]
            row["ensemble_std"] = 100 * f["ensemble_accuracy_std"]
        if method == "pet":
            # the PET run scores its patterns untrained on the way: zero-shot comes with it
            out["zero-shot"] = {"accuracy_mean": 100 * f["zero_shot_accuracy"], "accuracy_std": 0.0,
                                "per_pattern": [100 * f[k] for k in sorted(f) if k.startswith("zero_shot_pattern")]}
            if "zero_shot_calibrated_accuracy" in f:
                out["zero-shot"].update(calibrated_mean=100 * f["zero_shot_calibrated_accuracy"], calibrated_per_pattern=[
                    100 * f[k] for k in sorted(f) if k.startswith("zero_shot_calibrated_pattern")])
        if method in methods:
            out[method] = row
        compare(out, task)
        save()
        log(f"{task} {method}: {row['accuracy_mean']:.2f} +- {row['accuracy_std']:.2f}")
    return out


def tapt_suffix(assignments: list[str]) -> str:
    """The file-name part of ``--tapt-set`` runs: ``-tapt-train.steps-4000`` (empty without assignments)."""
    names = ("".join(c if c.isalnum() or c in "-." else "-" for c in a) for a in assignments)
    return "-tapt-" + "_".join(names) if assignments else ""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="data root holding sst2/ and rte/")
    ap.add_argument("--tasks", default="sst2,rte", help="comma-separated: sst2, rte")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated: {', '.join(METHODS)}")
    ap.add_argument("--shots", type=int, default=16, help="examples per class (and as many dev examples)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary directory, removed)")
    ap.add_argument("--quick", action="store_true", help="4 shots, 2 seeds, 2 steps a model, the stages' quick variants")
    ap.add_argument("--tapt-set", action="append", default=[], metavar="KEY=VALUE",
                    help="an assignment of the task-adaptive stage, repeatable (e.g. train.steps=4000); the rows record it "
                         "and go to a file of their own, fewshot-<device>-<date>-tapt-<assignments>.json")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if any("=" not in a for a in args.tapt_set):
        raise SystemExit(f"--tapt-set {next(a for a in args.tapt_set if '=' not in a)!r}: write KEY=VALUE, e.g. train.steps=4000")
    device = common.pick_device(args.device)
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}")
    env = common.environment(device)
    suffix = ("-quick" if args.quick else "") + tapt_suffix(args.tapt_set)
    payload = common.read_day_json("fewshot", env, args.out_dir, suffix=suffix)
    settings: dict[str, Any] = dict(quick=args.quick, shots=4 if args.quick else args.shots, seeds=2 if args.quick else args.seeds)
    if args.tapt_set:
        settings["tapt_set"] = list(args.tapt_set)
    command = " ".join(["python", "benchmarks/fewshot.py", *(argv or sys.argv[1:])])
    tasks = [t for t in args.tasks.split(",") if t]
    # each task's methods of earlier calls are kept where those calls had this call's settings
    results: dict[str, Any] = {t: r for t, r in with_settings(payload).get("results", {}).items() if r.get("settings") == settings}
    read = {t: dict(r) for t, r in results.items()}  # what this call found, to tell its own entries from those

    def save() -> None:
        """Write what this call produced for its tasks into the day's file: a task of the same settings on disk keeps
        the methods other calls (also concurrent ones) wrote there since; tasks of other settings are replaced, and
        tasks this call does not run are kept as they are."""
        def update(disk: dict[str, Any]) -> None:
            with_settings(disk)
            for task in tasks:
                if task not in results:
                    continue
                mine = {k: v for k, v in results[task].items() if read.get(task, {}).get(k) is not v}
                there = disk.get("results", {}).get(task, {})
                kept = there if there.get("settings") == settings else {}
                disk.setdefault("results", {})[task] = compare({**kept, **mine, "settings": settings}, task)
                disk.setdefault("commands", {})[task] = command

        common.update_day_json("fewshot", env, update, args.out_dir, suffix=suffix)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for task in tasks:
            results[task] = compare(results.get(task, {}), task)
            results[task]["settings"] = settings
            run_task(task, methods, args.data, work, str(device), args.quick, args.shots, args.seeds,
                     lambda s: print(s, flush=True) if s.startswith(("sst2 ", "rte ", "stage")) else None, results[task], save,
                     tapt_sets=args.tapt_set)
    path = common.results_path("fewshot", env, args.out_dir, suffix=suffix)
    for task, r in results.items():
        line = ", ".join(f"{m} {r[m]['accuracy_mean']:.2f} +- {r[m]['accuracy_std']:.2f}" for m in METHODS if m in r)
        print(f"{task}: {line}" + (f"; PET - fine-tuning {r['pet_minus_finetune']:+.2f} (goal +{r['goal_points']})" if "goal_met" in r else ""))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
