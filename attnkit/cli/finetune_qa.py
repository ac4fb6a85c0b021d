"""``attnkit finetune qa``: fine-tune a BERT-family model for extractive QA (SQuAD v1.1 format).

    attnkit finetune qa --model DIR --train train.json --dev dev.json --out runs/qa
    attnkit finetune qa --model DIR --data xquad.en.json --split-articles 10 --out runs/qa

``--model`` is an attnkit or Hugging Face BERT-family directory with its tokenizer
(``tokenizer.json`` or ``vocab.txt``); a model without a QA head gets a fresh span head on
its encoder. ``--split-articles N`` evaluates on the last N articles of ``--data`` and
trains on the rest. Contexts are cut into windows of ``--max-len`` tokens that start
``--doc-stride`` tokens apart; answers are extracted over all windows of a question from the
``--n-best`` start and end logits, at most ``--max-answer-len`` tokens long. Answers whose
offsets do not match their context are skipped and counted, as are over-long questions
(truncated to ``--max-question-len`` tokens).

The recipe defaults to BERT's for SQuAD v1.1 (section 4.2): AdamW, lr 5e-5,
batch 32, 3 epochs, linear decay after 10% warm-up; change it with ``--set train.KEY=VALUE``
(``train.layer_decay=0.8``, say, for ELECTRA's layer-wise learning-rate decay).
Exact match and F1 (the official SQuAD definitions) are computed on the dev questions at the
end of every epoch; the best model goes to ``OUT/model`` (with ``tokenizer.json``), its
dev predictions to ``OUT/predictions.json`` and the scores to ``OUT/eval.json``.

With only XQuAD-en's 1,013 training questions (``--split-articles 8``), all-MiniLM-L6-v2
needs more than BERT's recipe: 3 epochs at 5e-5 reach F1 7.5 on the 8 held-out articles,
15 epochs at ``train.lr=1e-4`` EM 33.9 / F1 51.3 (H200, 11 s of training).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_set_argument, apply_overrides
from attnkit.errors import ConfigError

DEFAULT_TRAIN = dict(
    epochs=3, batch_size=32, optimizer="adamw", lr=5e-5, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
    schedule="linear", warmup_ratio=0.1, clip_norm=1.0, label_smoothing=0.0, log_every=10, metric="f1", metric_mode="max",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="attnkit or Hugging Face BERT-family directory (with its tokenizer)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json or vocab.txt (default: the one in --model)")
    p.add_argument("--train", type=Path, help="SQuAD v1.1 JSON to train on")
    p.add_argument("--dev", type=Path, help="SQuAD v1.1 JSON to evaluate on")
    p.add_argument("--data", type=Path, help="one SQuAD v1.1 JSON to split by article (with --split-articles)")
    p.add_argument("--split-articles", type=int, default=None, metavar="N", help="evaluate on the last N articles of --data")
    p.add_argument("--out", type=Path, default=Path("runs/qa"), help="output directory (default: runs/qa)")
    p.add_argument("--epochs", type=float, default=DEFAULT_TRAIN["epochs"], help="passes over the training windows unless train.steps is set (default: 3)")
    p.add_argument("--max-len", type=int, default=384, help="tokens per window, specials included (default: 384; capped at the model's positions)")
    p.add_argument("--doc-stride", type=int, default=128, help="tokens between the starts of consecutive windows (default: 128)")
    p.add_argument("--max-question-len", type=int, default=64, help="longer questions are truncated (default: 64)")
    p.add_argument("--n-best", type=int, default=20, help="start and end candidates per window (default: 20)")
    p.add_argument("--max-answer-len", type=int, default=30, help="longest answer in tokens (default: 30)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_set_argument(p)


def load_data(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(train, dev)`` :class:`attnkit.data.squad.SquadData` from ``--train/--dev`` or ``--data/--split-articles``."""
    from attnkit.data.squad import read_squad, split_articles

    if args.data is not None:
        if args.train is not None or args.dev is not None:
            raise ConfigError("give either --data with --split-articles, or --train and --dev, not both")
        if args.split_articles is None:
            raise ConfigError("--data needs --split-articles N (the number of articles to evaluate on)")
        return split_articles(args.data, args.split_articles)
    if args.train is None or args.dev is None:
        raise ConfigError("give --train and --dev (or --data FILE --split-articles N)")
    if args.split_articles is not None:
        raise ConfigError("--split-articles goes with --data, not with --train/--dev")
    return read_squad(args.train), read_squad(args.dev)


def train_config(args: argparse.Namespace, n_windows: int) -> Any:
    """The TrainConfig: the defaults, steps from ``--epochs``, then ``--set`` overrides."""
    from attnkit.training.config import TrainConfig

    if args.epochs <= 0:
        raise ConfigError(f"--epochs {args.epochs} is not allowed; it must be positive")
    batch = int(DEFAULT_TRAIN["batch_size"])
    for a in args.set:  # the batch size decides the steps per epoch
        key, _, value = a.partition("=")
        if key.strip() in ("batch_size", "train.batch_size"):
            try:
                batch = int(value)
            except ValueError:
                raise ConfigError(f"--set {a}: batch_size must be an integer") from None
    per_epoch = max(1, math.ceil(n_windows / max(batch, 1)))
    steps = max(1, math.ceil(per_epoch * args.epochs))
    base = {k: v for k, v in DEFAULT_TRAIN.items() if k not in ("epochs", "warmup_ratio")}
    cfg = TrainConfig(**base, steps=steps, warmup=0, eval_every=min(per_epoch, steps))
    cfg = apply_overrides(args.set, {"train": cfg})["train"]
    if not any(a.partition("=")[0].strip() in ("warmup", "train.warmup") for a in args.set):
        cfg = cfg.with_overrides([f"warmup={int(float(DEFAULT_TRAIN['warmup_ratio']) * cfg.steps)}"])  # 10% of the final steps
    return cfg


def run(args: argparse.Namespace) -> int:
    import torch

    import attnkit
    from attnkit.data.squad import make_windows
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.training import Trainer, pick_device
    from attnkit.training.finetune import encoder_of
    from attnkit.training.qa import QATask, extract_answers, qa_model_from, window_logits

    train_data, dev_data = load_data(args)
    print(f"train: {train_data.report()}")
    print(f"dev: {dev_data.report()}")
    source = attnkit.load(args.model)
    enc_cfg = encoder_of(source).config
    tok = WordPieceTokenizer.from_file(args.tokenizer if args.tokenizer is not None else args.model)
    tok.check_model(enc_cfg.vocab_size)
    max_len = min(args.max_len, enc_cfg.max_len)
    if max_len < args.max_len:
        print(f"--max-len {args.max_len} is beyond the model's {max_len} positions; windows of {max_len} tokens")
    shape = dict(max_len=max_len, doc_stride=args.doc_stride, max_question_len=args.max_question_len)
    train_w = make_windows(tok, train_data.examples, **shape)
    dev_w = make_windows(tok, dev_data.examples, **shape)
    for name, w, d in (("train", train_w, train_data), ("dev", dev_w, dev_data)):
        unanswered = sum(x.start_label == 0 for x in w.windows)
        print(
            f"{name}: {len(w.windows)} windows for {len(d.examples)} questions ({unanswered} without the answer); "
            f"{w.truncated_questions} questions truncated to {args.max_question_len} tokens"
            + (f"; {w.unlabelled} answers cover no token (labelled [CLS])" if w.unlabelled else "")
        )
    cfg = train_config(args, len(train_w.windows))
    torch.manual_seed(cfg.init_seed)  # a fresh span head's weights: fixed by train.init_seed, whatever train.seed
    model = qa_model_from(source)
    device = pick_device(cfg.device)
    task = QATask(train_w, dev_data.examples, dev_w, batch_size=cfg.batch_size, pad_id=tok.pad_id,
                  n_best=args.n_best, max_answer_len=args.max_answer_len, device=device)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    settings = {**shape, "n_best": args.n_best, "max_answer_len": args.max_answer_len}
    (out / "run_config.json").write_text(json.dumps({"train": cfg.to_dict(), "qa": settings}, indent=2) + "\n")
    print(f"model: {model.num_parameters() / 1e6:.2f}M parameters; {cfg.steps} steps of {cfg.batch_size} windows on {device}")
    result = Trainer(model, task, cfg, out, tokenizer=tok, progress=not args.no_progress).fit()
    print(f"trained {result.step} steps in {result.seconds:.1f}s; best dev F1 {result.best:.2f} at step {result.best_step}")

    best = attnkit.load(out / "model", map_location=device).eval()  # the saved model, scored once more
    logits = window_logits(best, dev_w, tok.pad_id, batch_size=cfg.batch_size, device=device)
    predictions = extract_answers(dev_data.examples, dev_w, logits, n_best=args.n_best, max_answer_len=args.max_answer_len)
    from attnkit.data.squad_eval import squad_scores

    scores = squad_scores(predictions, {e.id: e.answer_texts for e in dev_data.examples})
    report = {
        "exact_match": scores["exact_match"], "f1": scores["f1"], "questions": len(dev_data.examples),
        "dev_articles": len(dev_data.articles), "train_questions": len(train_data.examples),
        "skipped_answers": {"train": train_data.bad_answers, "dev": dev_data.bad_answers},
        "skipped_questions": {"train": train_data.skipped_questions, "dev": dev_data.skipped_questions},
        "truncated_questions": {"train": train_w.truncated_questions, "dev": dev_w.truncated_questions},
        "windows": {"train": len(train_w.windows), "dev": len(dev_w.windows)},
        "steps": result.step, "seconds": result.seconds, **settings,
    }
    (out / "predictions.json").write_text(json.dumps(predictions, indent=1, ensure_ascii=False) + "\n")
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"dev exact match {scores['exact_match']:.2f}, F1 {scores['f1']:.2f} ({len(dev_data.examples)} questions)")
    print(f"model saved to {out / 'model'}")
    return 0


def add_parser(finetune_subparsers: Any) -> None:
    """Add ``qa`` to the subparsers of ``attnkit finetune``."""
    p = finetune_subparsers.add_parser(
        "qa", help="extractive question answering (SQuAD v1.1 JSON)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p)
    p.set_defaults(run=run)
