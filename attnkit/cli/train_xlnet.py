"""attnkit train xlnet: pretrain XLNet (permutation LM with two-stream attention) on text."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli.runner import add_run_arguments, run_command

DESCRIPTION = """Pretrain XLNet (Yang et al. 2019) from scratch on your own text.

  attnkit train xlnet --recipe xlnet-shakespeare --data-root DATA --out runs/xlnet
  attnkit train xlnet --text FILE [FILE ...] --out runs/xlnet

Permutation language modelling: each sequence (those of attnkit train mlm, unmasked) draws a
factorisation order, and the last 1/K of it (xlnet.k, 6) is predicted from the rest by the query
stream of the two-stream attention, which knows the position it predicts but not its token. The
model's sizes come from model.* (default bert-tiny's: 2 layers, d_model 128). The best model by
held-out loss goes to OUT/model as an XLNetLM."""

FLAGS = {"tokenizer": "data.tokenizer", "vocab_size": "data.vocab_size", "max_seq_len": "data.max_seq_len",
         "documents": "data.documents", "sentences": "data.sentences"}


def add_parser(tasks: Any) -> None:
    """Register ``xlnet`` among the tasks of ``attnkit train``."""
    p = tasks.add_parser("xlnet", help="pretrain XLNet (permutation LM, two-stream attention) on text", description=DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("xlnet")
    g.add_argument("--text", type=Path, nargs="+", metavar="FILE", help="UTF-8 text file(s) to pretrain on (sets data.text)")
    g.add_argument("--tokenizer", type=Path, metavar="FILE", help="tokenizer.json or vocab.txt (sets data.tokenizer)")
    g.add_argument("--vocab-size", type=int, help="size of the learned WordPiece vocabulary (sets data.vocab_size; default 8000)")
    g.add_argument("--max-seq-len", type=int, help="tokens per sequence, specials included (sets data.max_seq_len; default 128)")
    g.add_argument("--documents", choices=("paragraphs", "files"), help="what a document is (sets data.documents)")
    g.add_argument("--sentences", choices=("lines", "punct"), help="what a sentence is (sets data.sentences)")
    add_run_arguments(p, "xlnet", out="runs/xlnet")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.cli.train import flag_assignments
    from attnkit.runs import job

    flags = flag_assignments(args, FLAGS)
    if args.text is not None:
        flags.append(f"data.text={json.dumps([str(t) for t in args.text])}")
    run_command(args, job("xlnet"), flags)
    return 0
