"""Fine-tune all-MiniLM-L6-v2 on SST-2, RTE, WNUT-17 and XQuAD through their recipes; report scores and wall time.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed), with the data
root holding ``sst2/``, ``rte/``, ``wnut17/`` and ``squad/``:

    python benchmarks/finetune.py --data ../shared/data                          # one GPU: all four recipes
    python benchmarks/finetune.py --data ../shared/data --tasks sst2 --soup 5    # the SST-2 figure: a soup of 5 seeds
    python benchmarks/finetune.py --data ../shared/data --tasks rte --seeds 0 1 2 3   # the RTE figure: mean of 4 seeds
    python benchmarks/finetune.py --data ../shared/data --tasks wnut17 --soup 6  # the WNUT-17 figure
    python benchmarks/finetune.py --data ../shared/data --quick --device cpu     # the recipes' quick variants: a smoke run

Each task names its recipe (``attnkit recipes`` lists them) and runs it in this process through
the one run path (:func:`attnkit.runs.run`), as ``attnkit finetune classify|ner|qa --recipe NAME``
does, stages included (:func:`attnkit.runs.path.run_stages`: the task-adaptive masked-LM
pretraining of ``sst2-minilm`` and ``rte-minilm``, written under the task's output folder):

* ``sst2``: ``sst2-minilm``, dev accuracy (target >= 91.0);
* ``rte``: ``rte-minilm`` (sentence pairs), dev accuracy (target >= 63);
* ``wnut17``: ``wnut17-minilm``, ``emerging.dev.conll`` choosing the best epoch and the chosen
  model scored once on ``emerging.test.annotated`` (entity F1, target >= 45);
* ``xquad``: ``xquad-minilm``, trained on the first 40 articles of XQuAD-en and evaluated on the
  last 8: exact match and F1, with no target;
* ``sst2-features``, ``wnut17-features``: ``sst2-minilm-features`` and ``wnut17-minilm-features``, the
  feature-based use of the frozen encoder (Devlin et al. 2019, section 5.3) scored as the fine-tuned
  recipes are, with no target: ``--tasks sst2,sst2-features,wnut17,wnut17-features --seeds 0 1 2
  --tag features`` compares the two ways on both tasks in one file.

The recipes were chosen on the dev sets they report, so those dev scores lean optimistic; seeds
move RTE by several points, WNUT-17 by about 2 and SST-2 by about 1. ``--set KEY=VALUE``
overrides every task's recipe (``--set train.optim.lr=1e-4``, ``--set data.epochs=5``,
``--set data.model=DIR`` to fine-tune another checkpoint, with ``--no-stages`` to skip the
pretraining stage). Wall time covers everything the run does (tokenization, training,
evaluation, saving); a stage's time is reported beside it.

``--seeds S ...`` runs the recipe once per seed (``--set train.seed=S``), each in
``<--out>/<task>-seed<S>`` with its own stage, and reports their mean. ``--soup N``
(classify/ner) fine-tunes seeds 0..N-1 from one starting point (one stage, in ``<--out>/<task>``),
averages their weights with :func:`attnkit.training.averaging.save_averaged` (what ``attnkit
average`` does) into ``<--out>/<task>/model`` (a uniform model soup, Wortsman et al. 2022) and
reports the soup's score, the seeds' rows under ``ingredients``. Results go to
``benchmarks/results/finetune-<device>-<date>[-tag].json`` with the recipe, the overrides, the
equivalent command line, the device and the software versions. A file of that device, date and tag
is read first and only the tasks run are replaced, so the tasks of one comparison may run as
separate, concurrent calls.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from attnkit import recipes, runs  # noqa: E402
from attnkit.recipes import Recipe  # noqa: E402
from attnkit.runs.finetune import explicit_schedule  # noqa: E402
from attnkit.runs.path import run_stages  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

# task -> (its recipe, target of the reported metric as a fraction, or None)
TASKS: dict[str, tuple[str, float | None]] = {
    "sst2": ("sst2-minilm", 0.910),
    "rte": ("rte-minilm", 0.63),
    "wnut17": ("wnut17-minilm", 0.45),
    "xquad": ("xquad-minilm", None),
    "sst2-features": ("sst2-minilm-features", None),
    "wnut17-features": ("wnut17-minilm-features", None),
}
DEFAULT_TASKS = ("sst2", "rte", "wnut17", "xquad")  # the fine-tuning recipes; the feature-based ones on request
COMMANDS = {"classify": "finetune classify", "ner": "finetune ner", "qa": "finetune qa"}


def recipe_of(task: str) -> Recipe:
    """The recipe task ``task`` runs."""
    return recipes.get(TASKS[task][0])


def metric_name(task: str) -> str:
    """The metric the task's recipe chooses its model by (``accuracy`` or ``f1``)."""
    return recipe_of(task).train.eval.metric  # type: ignore[attr-defined]


def data_file(task: str, key: str, root: Path) -> Path | None:
    """The recipe's ``data.<key>`` file under the data root (None if the recipe has none)."""
    value = getattr(recipe_of(task).data, key, "")
    return root / value if value else None


def model_probabilities(model_path: Path, task: str, split: Path, device: Any,
                        full_length: bool = False) -> tuple[list[Any], Any, Any, list[str]]:
    """Softmax outputs of a saved classifier/tagger on ``split`` (per example; per sub-word for a tagger), the data,
    its encoding and the label names, through :func:`attnkit.evaluation.labelled_logits` (what ``attnkit eval`` uses).

    Rows are cut at the recipe's ``data.max_len`` (as the run's own dev evaluation), or with ``full_length``
    at the model's position limit (as the run scores its test file).
    """
    from attnkit.evaluation import labelled_logits
    from attnkit.loading import load_model_and_tokenizer
    from attnkit.training import finetune as ft
    from attnkit.training import pick_device

    model, tok = load_model_and_tokenizer(model_path, None)
    device = pick_device(str(device))
    model.to(device).eval()
    limit = ft.encoder_of(model).config.max_len
    max_len = limit if full_length else min(recipe_of(task).data.max_len, limit)  # type: ignore[attr-defined]
    logits, data, enc, labels = labelled_logits(model, tok, recipe_of(task).task, split, max_len, device)
    return [x.double().softmax(-1) for x in logits], data, enc, labels


def metric_of(task: str, probs: list[Any], data: Any, enc: Any, labels: list[str]) -> float:
    """The task's metric (accuracy, or entity F1 as seqeval defines it) of ``probs``, as a fraction."""
    from attnkit.evaluation import labelled_scores

    return labelled_scores(recipe_of(task).task, probs, data, enc, labels)[metric_name(task)]


def score_tagger(model_dir: Path, task: str, conll: Path, device: str) -> dict[str, Any]:
    """Entity precision/recall/F1 of a saved tagger of ``task`` on a CoNLL file, rows at the model's full length."""
    from attnkit.evaluation import labelled_scores

    probs, data, enc, labels = model_probabilities(model_dir, task, conll, device, full_length=True)
    s = labelled_scores("ner", probs, data, enc, labels)
    return {"precision": s["precision"], "recall": s["recall"], "f1": s["f1"], "n_gold": s["entities"], "truncated": enc.truncated}


def make_soup(models: list[Path], out: Path) -> None:
    """A uniform soup of ``models`` in ``out``: :func:`~attnkit.training.averaging.save_averaged`, then the side files
    of the last model (its sentence-transformers pooling config), as ``attnkit average`` writes it."""
    from attnkit.training.averaging import save_averaged

    shutil.rmtree(out, ignore_errors=True)
    save_averaged(models, out)
    written = {q.name for q in out.iterdir()}
    for extra in sorted(models[-1].iterdir()):
        if extra.name not in written:
            (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, out / extra.name)


def command_line(task: str, out: Path, args: argparse.Namespace, sets: list[str]) -> str:
    """The ``attnkit`` command that trains the same run (stages included unless ``--no-stages``)."""
    recipe = recipe_of(task)
    parts = ["attnkit", COMMANDS[recipe.task], "--recipe", recipe.name, "--data-root", str(args.data), "--out", str(out),
             *(["--quick"] if args.quick else []), *[x for kv in sets for x in ("--set", kv)]]
    return " ".join(parts)


def stage_record(out: Path, recipe: Recipe) -> dict[str, Any]:
    """What the recipe's stages left in ``out/stages``: each stage's final scores and its loaded weights' scores."""
    record: dict[str, Any] = {}
    for stage in recipe.before:
        where = out / "stages" / stage.recipe
        row: dict[str, Any] = {"dir": str(where)}
        for name in ("eval.json", "start_eval.json"):
            if (where / name).is_file():
                row[name.removesuffix(".json")] = json.loads((where / name).read_text())
        record[stage.recipe] = row
    return record


def stages(task: str, out: Path, args: argparse.Namespace) -> tuple[list[str], dict[str, Any] | None]:
    """Run the recipe's stages in ``out/stages`` (once: a finished stage is reused); the assignments that
    feed their models on and their record (None without stages or with ``--no-stages``)."""
    recipe = recipe_of(task)
    if not recipe.before or args.no_stages:
        return [], None
    start = time.perf_counter()
    feeds = run_stages(recipe, out, quick=args.quick, root=args.data, progress=False)
    return feeds, {"wall_s": time.perf_counter() - start, **stage_record(out, recipe)}


def finetune_once(task: str, out: Path, args: argparse.Namespace, feeds: list[str], seed: int | None = None) -> dict[str, Any]:
    """One run of the task's recipe into ``out`` (``feeds``: the stages' models; ``seed``: ``train.seed``); its row."""
    recipe, target = recipe_of(task), TASKS[task][1]
    metric = metric_name(task)
    sets = [*([f"train.seed={seed}"] if seed is not None else []), *args.set]
    sets += explicit_schedule(sets)  # a given train.steps, warm-up or evaluation cadence is taken as given
    job = runs.job(recipe.task)
    cfgs = runs.resolve_configs(job, recipe=recipe, assignments=[*feeds, f"train.device={args.device}", *sets], quick=args.quick,
                                cuda=args.device.startswith("cuda"), root=args.data)
    print(f"== {task}: {command_line(task, out, args, sets)}", flush=True)
    start = time.perf_counter()
    report = runs.run(job, cfgs, out, progress=False, recipe=recipe.name)
    wall = time.perf_counter() - start
    final = report.final
    row: dict[str, Any] = {"task": task, "recipe": recipe.name, "seed": cfgs["train"].seed, "overrides": sets,  # type: ignore[attr-defined]
                           "command": command_line(task, out, args, sets), "wall_s": wall, "train_s": report.result.seconds,
                           "steps": report.result.step, "best_step": final.get("best_step"), "model": str(report.model_dir)}
    if recipe.task == "qa":  # SQuAD scores are percentages; keep the fractions of the other tasks
        row.update(dev={"exact_match": final["exact_match"], "f1": final["f1"]}, metric="dev EM / F1", value=final["f1"] / 100,
                   exact_match=final["exact_match"] / 100, target=None, met=None)
        print(f"   dev exact match {final['exact_match']:.2f}, F1 {final['f1']:.2f} (no target), wall {wall:.1f}s", flush=True)
        return row
    row["dev"] = {k: v for k, v in final.items() if not k.startswith("test_") and k != "best_step"}
    test = {k.removeprefix("test_"): v for k, v in final.items() if k.startswith("test_")}
    if test:
        row["test"] = test
    reported = test[metric] if test else final[metric]
    row.update(metric=f"{'test' if test else 'dev'} {metric}", value=reported, target=target, met=reported >= target if target else None)
    print(f"   {row['metric']} = {100 * reported:.2f}" + (f" (target {100 * target:.1f})" if target else "") + f", wall {wall:.1f}s",
          flush=True)
    return row


def run_task(task: str, args: argparse.Namespace, out_root: Path) -> dict[str, Any]:
    """The task's recipe once, once per ``--seeds`` seed (mean reported) or as a soup of ``--soup`` seeds; its row."""
    kind = recipe_of(task).task
    if args.soup >= 2 and kind != "qa":
        return run_soup(task, args, out_root)
    if not args.seeds:
        feeds, stage = stages(task, out_root / task, args)
        return {**finetune_once(task, out_root / task, args, feeds), "stages": stage}
    rows = []
    for seed in args.seeds:  # each seed its own run, stages included (as the published mean of seeds)
        out = out_root / f"{task}-seed{seed}"
        feeds, stage = stages(task, out, args)
        rows.append({**finetune_once(task, out, args, feeds, seed), "stages": stage})
    values = [r["value"] for r in rows]
    target = TASKS[task][1]
    mean = statistics.mean(values)
    print(f"   {task}: mean of {len(rows)} seeds {100 * mean:.2f} ({', '.join(f'{100 * v:.2f}' for v in values)})", flush=True)
    return {"task": task, "recipe": rows[0]["recipe"], "metric": f"{rows[0]['metric']}, mean of {len(rows)} seeds", "value": mean,
            "target": target, "met": mean >= target if target else None, "seeds": list(args.seeds), "runs": rows,
            "wall_s": sum(r["wall_s"] for r in rows), **({"exact_match": statistics.mean(r["exact_match"] for r in rows)}
                                                          if kind == "qa" else {})}


def run_soup(task: str, args: argparse.Namespace, out_root: Path) -> dict[str, Any]:
    """``--soup N``: fine-tune seeds 0..N-1 of the task's recipe from one starting point (one stage; one head
    initialisation, ``train.init_seed``), average them (a uniform model soup, Wortsman et al. 2022) and score
    the soup as the single run is scored; the ingredients' rows go under ``"ingredients"``."""
    target, metric = TASKS[task][1], metric_name(task)
    root = Path(args.data)
    feeds, stage = stages(task, out_root / task, args)
    ingredients = [finetune_once(task, out_root / f"{task}-seed{i}", args, feeds, i) for i in range(args.soup)]
    soup_dir = out_root / task / "model"
    make_soup([Path(r["model"]) for r in ingredients], soup_dir)
    print(f"== {task}: soup of {args.soup} seeds in {soup_dir}", flush=True)
    dev, test = data_file(task, "dev", root), data_file(task, "test", root)
    assert dev is not None
    dev_score = metric_of(task, *model_probabilities(soup_dir, task, dev, args.device))
    row: dict[str, Any] = {"task": task, "recipe": recipe_of(task).name, "soup_of": args.soup, "ingredients": ingredients,
                           "stages": stage, "wall_s": sum(r["wall_s"] for r in ingredients), "dev": {metric: dev_score}}
    if test is not None:
        row["test"] = score_tagger(soup_dir, task, test, args.device)
    reported = row["test"][metric] if test is not None else dev_score
    values = [r["value"] for r in ingredients]
    row.update(metric=f"{'test' if test else 'dev'} {metric}, soup of {args.soup}", value=reported, target=target,
               met=reported >= target if target else None, ingredients_mean=sum(values) / len(values))
    print(f"   soup of {args.soup}: {row['metric']} = {100 * reported:.2f} (ingredients {', '.join(f'{100 * v:.2f}' for v in values)}; "
          f"mean {100 * row['ingredients_mean']:.2f})", flush=True)
    return row


def table_row(r: dict[str, Any]) -> list[str]:
    """One Markdown row: task, metric, value (EM / F1 for QA), target (``-`` when none), wall seconds."""
    if "value" not in r:
        value = "-"
    elif "exact_match" in r:
        value = f"{100 * r['exact_match']:.2f} / {100 * r['value']:.2f}"
    else:
        value = f"{100 * r['value']:.2f}"
    target = f"{100 * r['target']:.1f}" if r.get("target") is not None else "-"
    return [r["task"], r.get("metric", f"failed (exit {r.get('exit_code')})"), value, target, f"{r.get('wall_s', 0):.0f}"]


def merge_rows(payload: dict[str, Any], rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Put this call's task rows into the day's file: a task run again replaces its row, other tasks' rows stay.

    Rows written under other overrides, another ``--quick`` or another ``--no-stages`` are dropped, so one file never
    mixes settings; ``commands`` keeps the command line each task's row came from, so tasks may run as separate
    (concurrent) calls.
    """
    settings = {"quick": args.quick, "overrides": args.set, "no_stages": args.no_stages}
    if any(payload.get(k, v) != v for k, v in settings.items()):
        for key in ("rows", "recipes", "commands"):
            payload.pop(key, None)
    mine = {r["task"] for r in rows}
    payload.update(benchmark="finetune", **settings)
    payload["rows"] = [r for r in payload.get("rows", []) if r.get("task") not in mine] + rows
    payload["recipes"] = {**payload.get("recipes", {}), **{t: TASKS[t][0] for t in mine}}
    payload["commands"] = {**payload.get("commands", {}), **{t: " ".join(sys.argv) for t in mine}}
    payload.pop("argv", None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data"),
                   help="the recipes' data root, with sst2/, rte/, wnut17/, squad/ (default: ../shared/data)")
    p.add_argument("--tasks", default=",".join(DEFAULT_TASKS),
                   help=f"comma-separated subset of {', '.join(TASKS)} (default: {', '.join(DEFAULT_TASKS)})")
    p.add_argument("--out", type=Path, default=Path("runs/finetune-bench"), help="where the runs go (each task's folder must hold no run)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when present)")
    p.add_argument("--quick", action="store_true", help="the recipes' quick variants (a few dozen examples, 3 steps): a smoke test")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override every task's recipe (repeatable)")
    p.add_argument("--no-stages", action="store_true",
                   help="fine-tune without the recipes' pretraining stages (from data.model as the recipe or --set names it)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="S",
                   help="one run per seed (train.seed), each with its own stages, and their mean (default: one run, the recipe's seed)")
    p.add_argument("--soup", type=int, default=0, metavar="N",
                   help="classify/ner tasks: fine-tune seeds 0..N-1 from one stage and report their uniform model soup "
                        "(Wortsman et al. 2022) instead of one run (default: 0, one run)")
    p.add_argument("--tag", default="", help="appended to the result file's name")
    p.add_argument("--out-dir", type=Path, default=None, help="folder for the JSON (default: benchmarks/results)")
    args = p.parse_args(argv)
    device = common.pick_device(args.device)
    args.device = str(device)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for n in names:
        if n not in TASKS:
            raise SystemExit(f"error: unknown task {n!r}; choose from {', '.join(TASKS)}")
    if args.soup == 1 or args.soup < 0:
        raise SystemExit(f"error: --soup {args.soup}: a soup needs at least 2 ingredients (0: no soup)")
    if args.soup and args.seeds:
        raise SystemExit("error: --soup N takes seeds 0..N-1; give --soup or --seeds, not both")
    rows = [run_task(n, args, args.out) for n in names]
    suffix = ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    path = common.update_day_json("finetune", common.environment(device), lambda payload: merge_rows(payload, rows, args),
                                  args.out_dir, suffix=suffix)
    print(common.markdown_table(["task", "metric", "value", "target", "wall s"], [table_row(r) for r in rows]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
