"""attnkit train unilm: pretrain (or continue) a BERT as UniLM, masked LM under per-batch self-attention masks."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_sequence_arguments, add_task_parser, run_job, text_flags

DESCRIPTION = """Pretrain a BERT as a unified language model, UniLM (Dong et al. 2019).

  attnkit train unilm --recipe unilm-shakespeare --data-root DATA --out runs/unilm
  attnkit train unilm --text FILE [FILE ...] [--model DIR] --out runs/unilm

Masked LM (BERT's masking) on the sequences of attnkit train mlm, where each batch draws one of
four self-attention masks: bidirectional (every token sees every token, BERT), left-to-right
(GPT's causal mask), right-to-left, or sequence-to-sequence (each row is cut at a random token
into a source, segment 0, that sees itself, and a target, segment 1, that sees the source and
its own left). The shares are unilm.bidirectional, unilm.seq2seq, unilm.left_to_right and
unilm.right_to_left (UniLM's 1/3, 1/3, 1/6, 1/6). --model continues from a BERT-family
checkpoint, as UniLM starts from BERT; without it the vocabulary is learned from the text and
the model starts from --preset (default bert-tiny). The best model by held-out masked-LM loss
goes to OUT/model; attnkit finetune classify|ner|qa --model OUT/model fine-tunes its encoder."""

FLAGS = {"model": "data.model", "tokenizer": "data.tokenizer", "vocab_size": "data.vocab_size", "max_seq_len": "data.max_seq_len",
         "documents": "data.documents", "sentences": "data.sentences"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("unilm")
    g.add_argument("--text", type=Path, nargs="+", metavar="FILE", help="UTF-8 text file(s) to pretrain on (sets data.text)")
    g.add_argument("--model", type=Path, metavar="DIR", help="continue from this BERT-family directory (sets data.model)")
    g.add_argument("--tokenizer", type=Path, metavar="FILE", help="tokenizer.json or vocab.txt (sets data.tokenizer)")
    g.add_argument("--vocab-size", type=int, help="size of the learned WordPiece vocabulary (sets data.vocab_size; default 8000)")
    g.add_argument("--preset", help="BERT preset to start from (default: bert-tiny; not with --model)")
    add_sequence_arguments(g)


def add_parser(tasks: Any) -> None:
    """Register ``unilm`` among the tasks of ``attnkit train``."""
    add_task_parser(tasks, "unilm", help="pretrain a BERT as UniLM (masked LM under bidirectional, causal and seq2seq masks)",
                    description=DESCRIPTION, add_arguments=add_arguments, run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.errors import ConfigError

    if args.model is not None and args.preset is not None:
        raise ConfigError(f"--model takes the architecture from {args.model}; leave out --preset")
    flags = text_flags(args, FLAGS)
    base: dict[str, Any] | None = None
    if args.model is not None and args.recipe is None and not args.resume:
        from attnkit.runs.mlm import continued_train

        base = {"train": continued_train()}  # continued pretraining: lr 1e-4, warm-up over data.warmup_fraction of the steps
    if args.preset is not None:
        from attnkit.models.bert import bert_preset

        try:
            base = {"model": bert_preset(args.preset)}
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return run_job(args, "unilm", flags, base=base)
