"""XQuAD-en: reading comprehension with a masked LM in one pass against extractive QA, EM/F1 and answers per second.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/mlm_qa.py --data DATA                          # one GPU: both recipes (the MLM-QA one with its stage), then the timing
    python benchmarks/mlm_qa.py --data DATA --quick --device cpu      # smoke run: the recipes' quick variants
    python benchmarks/mlm_qa.py --data DATA --parts train --work RUNS  # the runs and scores (may share the card)...
    python benchmarks/mlm_qa.py --data DATA --parts timing --work RUNS # ...then answers per second, alone on the card

Both models train through the one run path on the same split (40 articles to train, the last 8
to evaluate) and schedule: ``xquad-minilm`` (a span head, Devlin et al. 2019, section 4.2) and
``xquad-mlm-qa`` (``[CLS] passage [SEP] question [SEP] [MASK] x 16``, the answer read off one
pass as the best passage span; ``read_off`` in its row names the rule) after its stage,
``xquad-mlm`` (all-MiniLM-L6-v2 ships no masked-LM head: 2,000 steps of masked LM on the training
articles' passages and questions train one), which runs first through
:func:`attnkit.runs.path.run_stages` as ``attnkit finetune mlm-qa --recipe xquad-mlm-qa`` runs it;
``stage_s`` is its time, ``train_s`` the fine-tuning run's. Exact match and F1 are each run's
final scores (SQuAD's definitions). Answers per second:
each saved model answers every evaluation question ``--repeats`` times in fp32 batches of 64,
after one warm-up pass, from token ids to answer strings (the extractive model over all windows
of a question, with its n-best span search; the MLM model over its one row per question, with
its passage-span search).
Results go to ``benchmarks/results/mlm-qa-<device>-<date>.json``, written after each recipe's scores and
again after its timing; a file of that device and date is read first and only the recipes run are
replaced (``--recipes`` picks them), so they may run in separate calls. ``--parts timing`` adds the
answers per second of the runs kept in ``--work`` by an earlier ``--parts train`` call to its scores.
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

RECIPES = {"extractive": ("qa", "xquad-minilm"), "mlm": ("mlm-qa", "xquad-mlm-qa")}
PARTS = ("train", "timing")


def parse_parts(text: str) -> list[str]:
    """``--parts``: a comma-separated subset of :data:`PARTS` (``all``: both), in the order given."""
    return common.parse_parts(text, PARTS)


def train(kind: str, data: Path, work: Path, device: str, quick: bool) -> dict[str, Any]:
    from attnkit import recipes
    from attnkit.runs import job
    from attnkit.runs.path import resolve_configs, run, run_stages

    task, name = RECIPES[kind]
    j, recipe = job(task), recipes.get(name)
    on = [f"train.device={json.dumps(device)}"]
    t0 = time.perf_counter()
    fed = run_stages(recipe, work / kind, quick=quick, root=data, progress=False, log=lambda s: None, assignments=on)
    t1 = time.perf_counter()
    cfgs = resolve_configs(j, recipe=recipe, quick=quick, root=data, assignments=[*fed, *on], log=lambda s: None)
    report = run(j, cfgs, work / kind, progress=False, recipe=name, log=lambda s: None)
    row = {"exact_match": report.final["exact_match"], "f1": report.final["f1"], "stage_s": round(t1 - t0, 1),
           "train_s": round(time.perf_counter() - t1, 1), "steps": report.result.step}
    if kind == "mlm":
        row["read_off"] = cfgs["data"].read_off  # the rule that read the answers off the k distributions
    return row


def saved_run(kind: str, work: Path) -> tuple[Any, Path]:
    """The data config and model directory of ``kind``'s finished run in ``work`` (from its ``run_config.json``)."""
    from attnkit.errors import CheckpointError
    from attnkit.runs import job
    from attnkit.runs.path import read_run_config

    out = work / kind
    try:
        saved = read_run_config(out)
    except CheckpointError:
        raise SystemExit(f"--parts timing: {out} holds no finished {RECIPES[kind][1]} run; "
                         f"train it first with --parts train --work {work}") from None
    if not (out / "model").is_dir():
        raise SystemExit(f"--parts timing: {out / 'model'} does not exist; the {RECIPES[kind][1]} run did not finish")
    return job(RECIPES[kind][0]).config_types["data"].from_dict(saved["data"], prefix="data."), out / "model"


def answers_per_second(kind: str, d: Any, model_dir: Path, device: torch.device, repeats: int) -> float:
    """Questions answered per second by the saved model in ``model_dir`` (``d``: its run's data config)."""
    import attnkit
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.runs.qa import load_questions

    _, dev = load_questions(d)
    model = attnkit.load(model_dir, map_location=device).eval()
    tok = WordPieceTokenizer.from_file(model_dir)
    if kind == "extractive":
        from attnkit.data.squad import make_windows
        from attnkit.training.qa import extract_answers, window_logits

        def answer() -> None:
            w = make_windows(tok, dev.examples, max_len=d.max_len, doc_stride=d.doc_stride, max_question_len=d.max_question_len)
            extract_answers(dev.examples, w, window_logits(model, w, tok.pad_id, batch_size=64, device=device), n_best=d.n_best,
                            max_answer_len=d.max_answer_len)
    else:
        from attnkit.training.mlm_qa import encode_mlm_qa, predict_answers

        def answer() -> None:
            rows = encode_mlm_qa(tok, dev.examples, k=d.answer_len, max_len=d.max_len, max_question_len=d.max_question_len)
            predict_answers(model, rows, tok, k=d.answer_len, batch_size=64, device=device, read_off=d.read_off)

    with torch.no_grad():
        answer()  # warm-up
        times = []
        for _ in range(repeats):
            common.synchronize(device)
            t0 = time.perf_counter()
            answer()
            common.synchronize(device)
            times.append(time.perf_counter() - t0)
    return len(dev.examples) / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="data root holding squad/xquad.en.json")
    ap.add_argument("--device", default=None)
    ap.add_argument("--repeats", type=int, default=5, help="timed answering passes over the evaluation questions")
    ap.add_argument("--quick", action="store_true", help="the recipes' quick variants")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated: {', '.join(RECIPES)} (default both)")
    ap.add_argument("--parts", type=parse_parts, default=list(PARTS),
                    help="comma-separated: train (the runs and their scores), timing (answers per second of the saved models); "
                         "default both. Timing alone reads the runs of an earlier --parts train call from --work")
    ap.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary directory, removed)")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    device = common.pick_device(args.device)
    kinds = [k for k in args.recipes.split(",") if k]
    bad = [k for k in kinds if k not in RECIPES]
    if bad or not kinds:
        raise SystemExit(f"unknown recipe {bad[0] if bad else args.recipes!r}; choose from {', '.join(RECIPES)}")
    if "train" not in args.parts and args.work is None:
        raise SystemExit("--parts timing without train needs --work, the folder of the earlier --parts train call")
    env = common.environment(device)
    suffix = "-quick" if args.quick else ""
    command = " ".join(["python", "benchmarks/mlm_qa.py", *(argv or sys.argv[1:])])

    def save(kind: str, row: dict[str, Any]) -> Path:
        """Merge ``row`` into ``kind``'s results in the day's JSON (other recipes and calls, also concurrent ones, are kept)."""
        def update(disk: dict[str, Any]) -> None:
            disk.update(quick=args.quick, recipes={k: v[1] for k, v in RECIPES.items()}, command=command)
            if "train" in args.parts:
                disk.setdefault("results", {})[kind] = dict(row)
            else:
                if kind not in disk.get("results", {}):
                    raise SystemExit(f"--parts timing: the day's JSON has no {kind} scores; run --parts train first")
                disk["results"][kind].update(row)
            disk.setdefault("commands", {})[kind] = command

        return common.update_day_json("mlm-qa", env, update, args.out_dir, suffix=suffix)

    path = common.results_path("mlm-qa", env, args.out_dir, suffix=suffix)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        for kind in kinds:
            row: dict[str, Any] = {}
            if "train" in args.parts:
                row = train(kind, args.data, work, str(device), args.quick)
                path = save(kind, row)  # the scores, before the timing
                print(f"{kind:10} EM {row['exact_match']:.2f} F1 {row['f1']:.2f}", flush=True)
            if "timing" in args.parts:
                d, model_dir = saved_run(kind, work)
                row["answers_per_s"] = answers_per_second(kind, d, model_dir, device, 1 if args.quick else args.repeats)
                path = save(kind, row)  # with --parts timing alone, row holds only the speed
                print(f"{kind:10} {row['answers_per_s']:.1f} answers/s", flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
