"""attnkit finetune mlm-qa: reading comprehension with a masked LM, the answer predicted in one pass."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_squad_arguments, add_task_parser, finetune_flags, run_job

DESCRIPTION = """Answer questions about a passage with a masked LM, non-autoregressively.

  attnkit finetune mlm-qa --recipe xquad-mlm-qa --data-root DATA --out runs/xquad-mlm-qa
  attnkit finetune mlm-qa --model DIR --data xquad.en.json --split-articles 8 --answer-len 16 --out runs/mlm-qa
  attnkit finetune mlm-qa --model DIR --train train.json --dev dev.json --out runs/mlm-qa

The input is [CLS] passage [SEP] question [SEP] followed by --answer-len [MASK] tokens; the
masked LM predicts every answer token in one forward pass; the answer is the passage span most
probable under those independent predictions (its tokens at the first masks, then [SEP]), in
the passage's own text; --set data.read_off=free takes the best token at each mask up to the
best end instead, wherever those tokens come from.
Training is the masked-LM cross-entropy at the answer's tokens and the [SEP] after them (the
positions after [SEP] carry no target). The passage is cut to fit --max-len (training
questions keep their answer inside). The files are SQuAD v1.1 JSON; exact match and F1 are
SQuAD's, measured on the dev questions once an epoch; the best model goes to OUT/model, its
answers to OUT/predictions.json, its scores and answers per second to OUT/eval.json. A model
without a masked-LM head (all-MiniLM-L6-v2) gets a fresh one."""
EPILOG = """Defaults: AdamW, lr 5e-5, batch 32, 3 epochs, linear decay after 10% warm-up (BERT's fine-tuning recipe);
--show-config lists every setting."""
FLAGS = {"model": "data.model", "tokenizer": "data.tokenizer", "train": "data.train", "dev": "data.dev", "data": "data.data",
         "split_articles": "data.split_articles", "epochs": "data.epochs", "max_len": "data.max_len", "answer_len": "data.answer_len",
         "max_question_len": "data.max_question_len"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mlm-qa")
    g.add_argument("--model", type=Path, metavar="DIR", help="a BERT-family model directory, or all-MiniLM-L6-v2 (sets data.model)")
    g.add_argument("--tokenizer", type=Path, metavar="FILE", help="tokenizer.json or vocab.txt (default: the one in --model)")
    add_squad_arguments(g, data_help="one SQuAD v1.1 JSON to split by article (sets data.data)")
    g.add_argument("--epochs", type=float, metavar="N", help="passes over the training questions (sets data.epochs; default 3)")
    g.add_argument("--answer-len", type=int, metavar="K", help="[MASK] positions for the answer (sets data.answer_len; default 16)")
    g.add_argument("--max-len", type=int, metavar="N", help="tokens per row (sets data.max_len; default 384)")
    g.add_argument("--max-question-len", type=int, metavar="N", help="longer questions are truncated (sets data.max_question_len; default 64)")


def run(args: argparse.Namespace) -> int:
    return run_job(args, "mlm-qa", finetune_flags(args, FLAGS))


def add_parser(finetune_subparsers: Any) -> None:
    """Add mlm-qa to the subcommands of attnkit finetune."""
    add_task_parser(finetune_subparsers, "mlm-qa", help="reading comprehension with a masked LM, the answer in one pass (SQuAD v1.1 JSON)",
                    description=DESCRIPTION, epilog=EPILOG, add_arguments=add_arguments, run=run, set_task=True)
