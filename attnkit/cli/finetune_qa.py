"""attnkit finetune qa: the extractive question-answering subcommand of attnkit finetune."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_squad_arguments, add_task_parser, finetune_flags, run_job

DESCRIPTION = """Fine-tune a BERT-family model for extractive question answering (Devlin et al. 2019, section 4.2).

  attnkit finetune qa --recipe xquad-minilm --data-root DATA --out runs/xquad
  attnkit finetune qa --model DIR --train train.json --dev dev.json --out runs/qa
  attnkit finetune qa --model DIR --data xquad.en.json --split-articles 8 --out runs/qa
  attnkit finetune qa --resume --out runs/qa

The files are SQuAD v1.1 JSON. --split-articles N evaluates on the last N articles of --data
and trains on the others. Contexts are cut into windows of --max-len tokens starting
--doc-stride tokens apart; an answer is the best span over all windows of its question, from
the --n-best start and end candidates, at most --max-answer-len tokens long. Answers whose
offsets do not match their context are skipped and counted, as are over-long questions
(truncated to --max-question-len tokens).

Exact match and F1 (SQuAD's official definitions) are measured on the dev questions once an
epoch; the best model goes to OUT/model with its tokenizer, and is scored once more at the end:
its answers go to OUT/predictions.json, its scores to OUT/eval.json."""
EPILOG = """Defaults: BERT's SQuAD v1.1 recipe, AdamW, lr 5e-5, batch 32, 3 epochs, linear decay after 10%
warm-up. One epoch is ceil(training windows / (train.batch_size * train.grad_accum)) optimizer
steps; giving train.steps, train.schedule.warmup or train.eval.every yourself replaces the value
counted from the epochs. --show-config lists every setting; train.optim.layer_decay=0.8, for
instance, adds ELECTRA's layer-wise learning-rate decay."""
FLAGS = {"peft": "peft.method", "model": "data.model", "tokenizer": "data.tokenizer", "train": "data.train", "dev": "data.dev", "data": "data.data",
         "split_articles": "data.split_articles", "epochs": "data.epochs", "max_len": "data.max_len", "doc_stride": "data.doc_stride",
         "max_question_len": "data.max_question_len", "n_best": "data.n_best", "max_answer_len": "data.max_answer_len"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("qa")
    g.add_argument("--model", type=Path, metavar="DIR", help="attnkit or Hugging Face BERT-family directory, or all-MiniLM-L6-v2 (sets data.model)")
    g.add_argument("--tokenizer", type=Path, metavar="FILE", help="tokenizer.json or vocab.txt (default: the one in --model; sets data.tokenizer)")
    add_squad_arguments(g, data_help="one SQuAD v1.1 JSON to split by article, with --split-articles (sets data.data)")
    g.add_argument("--epochs", type=float, metavar="N", help="passes over the training windows (sets data.epochs; default 3)")
    g.add_argument("--peft", choices=("lora", "qlora", "prefix", "prompt", "ptuning", "ptuning-v2"), metavar="METHOD",
                   help="train an adapter instead of every weight (sets peft.method; --set peft.r=8 ...; OUT/model is the adapter)")
    g.add_argument("--max-len", type=int, metavar="N", help="tokens per window, specials included, capped at the model's positions "
                   "(sets data.max_len; default 384)")
    g.add_argument("--doc-stride", type=int, metavar="N", help="tokens between the starts of consecutive windows (sets data.doc_stride; default 128)")
    g.add_argument("--max-question-len", type=int, metavar="N", help="longer questions are truncated (sets data.max_question_len; default 64)")
    g.add_argument("--n-best", type=int, metavar="N", help="start and end candidates per window (sets data.n_best; default 20)")
    g.add_argument("--max-answer-len", type=int, metavar="N", help="longest answer in tokens (sets data.max_answer_len; default 30)")


def run(args: argparse.Namespace) -> int:
    return run_job(args, "qa", finetune_flags(args, FLAGS))


def add_parser(finetune_subparsers: Any) -> None:
    """Add qa to the subcommands of attnkit finetune."""
    add_task_parser(finetune_subparsers, "qa", help="extractive question answering (SQuAD v1.1 JSON)", description=DESCRIPTION,
                    epilog=EPILOG, add_arguments=add_arguments, run=run, set_task=True)
