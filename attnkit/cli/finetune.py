"""``attnkit finetune classify|ner|qa``: fine-tune a BERT-family model on labelled text.

``qa`` (extractive question answering) lives in :mod:`attnkit.cli.finetune_qa`; this module
holds ``classify`` and ``ner``:

    attnkit finetune classify --model DIR --train sst2/train.tsv --dev sst2/dev.tsv --out runs/sst2
    attnkit finetune classify --model DIR --train rte/train.tsv --dev rte/dev.tsv --out runs/rte
    attnkit finetune ner --model DIR --train wnut17train.conll --dev emerging.dev.conll --out runs/wnut

``--model`` is an attnkit or Hugging Face BERT-family directory with its tokenizer
(``tokenizer.json`` or ``vocab.txt``; or give ``--tokenizer``). Its encoder gets a fresh head
with the labels seen in ``--train``; labels in ``--dev`` that training never had are an error.

``classify`` reads GLUE ``.tsv`` files: ``sentence<TAB>label`` (SST-2) or
``index<TAB>sentence1<TAB>sentence2<TAB>label`` (RTE; pairs become ``[CLS] A [SEP] B [SEP]``).
``ner`` reads CoNLL files (``token<TAB>tag``, blank line between sentences); each word's tag
sits on its first sub-word and entity-level precision/recall/F1 are conlleval's.

Rows longer than ``--max-len`` tokens (capped at the model's position limit) are truncated and
counted. Batches are padded to their own longest row, with rows of similar length batched
together. The recipe (``--set train.KEY=VALUE``): AdamW, lr 5e-5, batch 32, linear decay after
10% warm-up, evaluated at the end of every epoch; the best model by dev accuracy (classify) or
entity F1 (ner) goes to ``OUT/model`` with ``tokenizer.json``, usable by ``attnkit predict``
and ``attnkit.load``; its dev scores go to ``OUT/eval.json``. ``--set train.layer_decay=0.8``
adds ELECTRA's layer-wise learning-rate decay: each layer trains at 0.8 times the rate of the
one above it, the head at the full rate. ``--set train.rdrop=1.0`` adds R-Drop (Liang et al.
2021): every batch runs twice with different dropout masks (one forward pass of twice the rows)
and the symmetric KL divergence of the two predictions, weighted by 1.0, joins their mean
cross-entropy; ``--set train.label_smoothing=0.1`` smooths the training labels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_set_argument, apply_overrides
from attnkit.errors import ConfigError, DataError

DEFAULT_TRAIN = dict(
    batch_size=32, optimizer="adamw", lr=5e-5, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, schedule="linear",
    warmup=0, clip_norm=1.0, label_smoothing=0.0, log_every=50,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("finetune", help="fine-tune a BERT-family model (classify, ner, qa)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for name, help_ in (("classify", "sentence or sentence-pair classification (GLUE .tsv)"),
                        ("ner", "token classification / named entities (CoNLL)")):
        t = tasks.add_parser(name, help=help_, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(t, name)
        t.set_defaults(run=run, task=name)
    try:
        from attnkit.cli import finetune_qa

        finetune_qa.add_parser(tasks)
    except ImportError:
        pass


def add_arguments(p: argparse.ArgumentParser, task: str) -> None:
    fmt = "GLUE .tsv" if task == "classify" else "CoNLL"
    p.add_argument("--model", type=Path, required=True, help="attnkit or Hugging Face BERT-family directory")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json or vocab.txt (default: the one in --model)")
    p.add_argument("--train", type=Path, required=True, help=f"training file ({fmt})")
    p.add_argument("--dev", type=Path, default=None, help=f"evaluation file ({fmt})")
    p.add_argument("--out", type=Path, default=Path(f"runs/{task}"), help=f"output directory (default: runs/{task})")
    p.add_argument("--epochs", type=float, default=None, help="passes over the training data unless train.steps is set (default: 3)")
    p.add_argument("--max-len", type=int, default=None, help="tokens per row, specials included (default: 128; capped at the model's positions)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_set_argument(p)


def _explicit(assignments: list[str], key: str) -> bool:
    """Was ``train.KEY`` (or a bare ``KEY``) given with ``--set``?"""
    return any(a.split("=", 1)[0].strip() in (key, f"train.{key}") for a in assignments)


def parse_configs(args: argparse.Namespace) -> dict[str, Any]:
    """``{"train": TrainConfig, "data": FinetuneConfig}`` from the defaults, the flags and ``--set``."""
    from attnkit.training.config import TrainConfig
    from attnkit.training.finetune import FinetuneConfig

    data = FinetuneConfig()
    if args.epochs is not None:
        data = data.replace(epochs=args.epochs)
    if args.max_len is not None:
        data = data.replace(max_len=args.max_len)
    metric = "accuracy" if args.task == "classify" else "f1"
    train = TrainConfig(**DEFAULT_TRAIN, metric=metric if args.dev else "loss", metric_mode="max" if args.dev else "min")
    return apply_overrides(args.set, {"train": train, "data": data})


def schedule(cfgs: dict[str, Any], args: argparse.Namespace, n_train: int) -> dict[str, Any]:
    """Fill ``train.steps`` (from epochs), ``warmup`` (from warmup_ratio) and ``eval_every`` (once an epoch) unless set."""
    from attnkit.training.finetune import steps_per_epoch

    t, d = cfgs["train"], cfgs["data"]
    per_epoch = steps_per_epoch(n_train, t.batch_size, t.grad_accum)
    changes: dict[str, Any] = {}
    steps = t.steps if _explicit(args.set, "steps") else max(1, round(d.epochs * per_epoch))
    changes["steps"] = steps
    if not _explicit(args.set, "warmup"):
        changes["warmup"] = int(d.warmup_ratio * steps)
    if not _explicit(args.set, "eval_every"):
        changes["eval_every"] = min(per_epoch, steps) if args.dev else 0
    if not _explicit(args.set, "log_every"):
        changes["log_every"] = min(t.log_every, steps)
    try:
        return {**cfgs, "train": t.replace(**changes)}
    except ConfigError as e:
        raise ConfigError(f"{e} (steps={steps} from {d.epochs} epochs of {per_epoch} steps)") from None


def load_model_and_tokenizer(model_dir: Path, tokenizer_path: Path | None) -> tuple[Any, Any]:
    """The model of ``model_dir`` and its WordPiece tokenizer, checked against each other."""
    import attnkit
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.training.finetune import encoder_of

    model = attnkit.load(model_dir)
    enc = encoder_of(model)
    tok = WordPieceTokenizer.from_file(tokenizer_path or model_dir, max_len=enc.config.max_len)
    tok.check_model(enc.config.vocab_size)
    return model, tok


def run(args: argparse.Namespace) -> int:
    import torch

    from attnkit.training import Trainer, pick_device
    from attnkit.training import finetune as ft

    source, tok = load_model_and_tokenizer(args.model, args.tokenizer)
    cfgs = parse_configs(args)
    train_data, dev_data, labels = _read(args, cfgs["data"].limit or None)
    cfgs = schedule(cfgs, args, len(train_data))
    t, d = cfgs["train"], cfgs["data"]
    enc_cfg = ft.encoder_of(source).config
    max_len = min(d.max_len, enc_cfg.max_len)
    if max_len < d.max_len:
        print(f"max_len {d.max_len} is beyond the model's {enc_cfg.max_len} positions; using {max_len}")
    encode = ft.encode_classification if args.task == "classify" else ft.encode_tagging
    train_enc = encode(tok, train_data, labels, max_len)
    dev_enc = encode(tok, dev_data, labels, max_len) if dev_data is not None else None
    for name, e in (("train", train_enc), ("dev", dev_enc)):
        if e is not None and e.truncated:
            print(f"truncated {e.truncated} of {len(e)} {name} examples to {max_len} tokens")
    n_tokens, n_padded = _padding_stats(train_enc, t.batch_size, d.bucket_size)
    print(f"{args.task}: {len(train_data)} train / {len(dev_data) if dev_data is not None else 0} dev examples, "
          f"{len(labels)} labels ({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''}); "
          f"{t.steps} steps; padding {100 * (1 - n_tokens / max(n_padded, 1)):.1f}% of batch positions")
    device = pick_device(t.device)
    kw = dict(batch_size=t.batch_size, eval_batch_size=d.eval_batch_size, bucket_size=d.bucket_size, pad_id=tok.pad_id, device=device,
              label_smoothing=t.label_smoothing, rdrop=t.rdrop)
    if args.task == "classify":
        task: Any = ft.ClassificationTask(train_enc, dev_enc, **kw)
    else:
        task = ft.TaggingTask(train_enc, dev_enc, tags=labels, dev_sentences=dev_data, **kw)
    classifier = d.classifier
    if args.task == "classify" and classifier == "auto" and ft.checkpoint_pooling(args.model) == "mean":
        classifier = "mean"  # the pooling a sentence-embedding checkpoint was trained with
        print("classifier: mean pooling (the checkpoint's sentence-transformers pooling; data.classifier=pooler to change)")
    torch.manual_seed(t.init_seed)  # the fresh head's weights: fixed by train.init_seed, whatever train.seed
    model = ft.build_head(source, args.task, labels, d.classifier_dropout, classifier)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_config.json").write_text(json.dumps({k: v.to_dict() for k, v in cfgs.items()}, indent=2) + "\n")
    start = time.perf_counter()
    result = Trainer(model, task, t, out, tokenizer=tok, progress=not args.no_progress).fit()
    seconds = time.perf_counter() - start
    best = max(result.evals, key=lambda r: r[t.metric] if t.metric_mode == "max" else -r[t.metric]) if result.evals else {}
    summary = {"task": args.task, "steps": result.step, "seconds": seconds, **{k: v for k, v in best.items()}}
    (out / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    scores = ", ".join(f"{k}={v:.4f}" for k, v in best.items() if k != "step")
    print(f"trained {result.step} steps in {seconds:.1f}s" + (f"; best dev (step {best.get('step')}): {scores}" if best else ""))
    print(f"model saved to {out / 'model'}")
    return 0


def _read(args: argparse.Namespace, limit: int | None) -> tuple[Any, Any, list[str]]:
    """Training and dev data (at most ``limit`` training examples), and the label names (from training)."""
    if args.task == "classify":
        from attnkit.data.glue import check_labels, read_classification_tsv

        train = read_classification_tsv(args.train, limit=limit)
        if not len(train):
            raise ConfigError(f"{args.train} holds no examples")
        if train.labels is None:
            raise ConfigError(f"{args.train} has no 'label' column; training needs labels")
        dev = read_classification_tsv(args.dev) if args.dev else None
        if dev is not None:
            if not len(dev):
                raise DataError(f"{args.dev} holds no examples; evaluation needs some (or leave out --dev)")
            if (dev.pairs is None) != (train.pairs is None):
                raise ConfigError(f"{args.train} and {args.dev} differ: one holds sentence pairs, the other single sentences")
            if dev.labels is None:
                raise ConfigError(f"{args.dev} has no 'label' column; evaluation needs labels")
            check_labels(train.label_names(), dev)
        names = list(train.label_names())
    else:
        from attnkit.data.conll import check_tags, read_conll

        train = read_conll(args.train, limit=limit)
        dev = read_conll(args.dev) if args.dev else None
        names = list(train.tag_names())
        if dev is not None:
            check_tags(names, dev)
    if len(names) < 2 and args.task == "classify":
        raise ConfigError(f"{args.train} has only the label {names!r}; classification needs at least two")
    return train, dev, names


def _padding_stats(data: Any, batch_size: int, bucket_size: int) -> tuple[int, int]:
    """Real tokens and padded batch positions of one epoch of bucketed batches."""
    from attnkit.training.finetune import bucketed_batches

    lengths = data.lengths()
    batches = bucketed_batches(lengths, batch_size, bucket_size=bucket_size)
    return sum(lengths), sum(len(b) * max(lengths[i] for i in b) for b in batches)
