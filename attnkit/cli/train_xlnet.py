"""attnkit train xlnet: pretrain XLNet (permutation LM with two-stream attention) on text."""

from __future__ import annotations

import argparse
from typing import Any

from attnkit.cli.common import add_sequence_arguments, add_task_parser, add_text_arguments, run_job, text_flags

DESCRIPTION = """Pretrain XLNet (Yang et al. 2019) from scratch on your own text.

  attnkit train xlnet --recipe xlnet-shakespeare --data-root DATA --out runs/xlnet
  attnkit train xlnet --text FILE [FILE ...] --out runs/xlnet

Permutation language modelling: each sequence (those of attnkit train mlm, unmasked) draws a
factorisation order, and the last 1/K of it (xlnet.k, 6) is predicted from the rest by the query
stream of the two-stream attention, which knows the position it predicts but not its token. The
model's sizes come from model.* (default bert-tiny's: 2 layers, d_model 128). With --set
xlnet.memory=true each sequence is two segments and the second attends to the first one's cached
states as well (Transformer-XL's memory). The best model by held-out loss goes to OUT/model as an
XLNetLM; attnkit finetune classify|ner fine-tunes it."""

FLAGS = {"tokenizer": "data.tokenizer", "vocab_size": "data.vocab_size", "max_seq_len": "data.max_seq_len",
         "documents": "data.documents", "sentences": "data.sentences"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("xlnet")
    add_text_arguments(g, tokenizer_help="tokenizer.json or vocab.txt (sets data.tokenizer)")
    add_sequence_arguments(g)


def add_parser(tasks: Any) -> None:
    """Register ``xlnet`` among the tasks of ``attnkit train``."""
    add_task_parser(tasks, "xlnet", help="pretrain XLNet (permutation LM, two-stream attention) on text", description=DESCRIPTION,
                    add_arguments=add_arguments, run=run)


def run(args: argparse.Namespace) -> int:
    return run_job(args, "xlnet", text_flags(args, FLAGS))
