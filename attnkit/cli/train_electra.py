"""attnkit train electra: pretrain an ELECTRA discriminator with its generator (replaced-token detection)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli.runner import add_run_arguments, run_command

DESCRIPTION = """Pretrain ELECTRA (Clark et al. 2020) from scratch on your own text.

  attnkit train electra --recipe electra-shakespeare --data-root DATA --out runs/electra
  attnkit train electra --text FILE [FILE ...] [--preset electra-small-discriminator] --out runs/electra

A small masked-LM generator (electra.generator_fraction of the discriminator's width, default 1/4)
fills 15% of the tokens, masked, by sampling from its predictions; the discriminator reads the
result and predicts for every token whether it was replaced. Both share the token, position and
segment embeddings and train together on the generator's masked-LM loss plus 50 times
(electra.disc_weight) the discriminator's. The text, the WordPiece vocabulary (learned from the
text) and the packed full-sentence sequences are those of attnkit train mlm.

Every train.eval.every steps the held-out generator loss and accuracy, the discriminator's loss
and accuracy over every token and the share of tokens replaced are printed; the best model goes
to OUT/model (attnkit finetune classify|ner|qa --model OUT/model fine-tunes its discriminator) and
the discriminator alone to OUT/discriminator (attnkit convert --to-hf --family electra
OUT/discriminator DIR writes a Hugging Face ElectraForPreTraining)."""

FLAGS = {"tokenizer": "data.tokenizer", "vocab_size": "data.vocab_size", "cased": "data.cased", "max_seq_len": "data.max_seq_len",
         "documents": "data.documents", "sentences": "data.sentences", "generator_fraction": "electra.generator_fraction"}


def add_parser(tasks: Any) -> None:
    """Register ``electra`` among the tasks of ``attnkit train``."""
    p = tasks.add_parser("electra", help="pretrain an ELECTRA discriminator and generator (replaced-token detection) on text",
                         description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("electra")
    g.add_argument("--text", type=Path, nargs="+", metavar="FILE", help="UTF-8 text file(s) to pretrain on (sets data.text)")
    g.add_argument("--tokenizer", type=Path, metavar="FILE", help="tokenizer.json or vocab.txt (sets data.tokenizer; default: "
                   "WordPiece learned from the text)")
    g.add_argument("--vocab-size", type=int, help="size of the learned WordPiece vocabulary (sets data.vocab_size; default 8000)")
    g.add_argument("--cased", action="store_const", const=True, help="the learned vocabulary keeps case (sets data.cased)")
    g.add_argument("--preset", help="discriminator preset (default: electra-small-discriminator)")
    g.add_argument("--generator-fraction", type=float, help="generator width / discriminator width (sets electra.generator_fraction; "
                   "default 0.25)")
    g.add_argument("--max-seq-len", type=int, help="tokens per sequence, specials included (sets data.max_seq_len; default 128)")
    g.add_argument("--documents", choices=("paragraphs", "files"), help="what a document is (sets data.documents)")
    g.add_argument("--sentences", choices=("lines", "punct"), help="what a sentence is (sets data.sentences)")
    add_run_arguments(p, "electra", out="runs/electra")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.cli.train import flag_assignments
    from attnkit.errors import ConfigError
    from attnkit.runs import job

    flags = flag_assignments(args, FLAGS)
    if args.text is not None:
        flags.append(f"data.text={json.dumps([str(t) for t in args.text])}")
    base = None
    if args.preset is not None:
        from attnkit.models.bert import bert_preset

        try:
            base = {"model": bert_preset(args.preset, pooler=False)}
        except ValueError as e:
            raise ConfigError(str(e)) from None
    run_command(args, job("electra"), flags, base=base)
    return 0
