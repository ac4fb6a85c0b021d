"""attnkit train electra: pretrain an ELECTRA discriminator with its generator (replaced-token detection)."""

from __future__ import annotations

import argparse
from typing import Any

from attnkit.cli.common import add_sequence_arguments, add_task_parser, add_text_arguments, run_job, text_flags

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


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("electra")
    add_text_arguments(g, tokenizer_help="tokenizer.json or vocab.txt (sets data.tokenizer; default: WordPiece learned from the text)")
    g.add_argument("--cased", action="store_const", const=True, help="the learned vocabulary keeps case (sets data.cased)")
    g.add_argument("--preset", help="discriminator preset (default: electra-small-discriminator)")
    g.add_argument("--generator-fraction", type=float, help="generator width / discriminator width (sets electra.generator_fraction; "
                   "default 0.25)")
    add_sequence_arguments(g)


def add_parser(tasks: Any) -> None:
    """Register ``electra`` among the tasks of ``attnkit train``."""
    add_task_parser(tasks, "electra", help="pretrain an ELECTRA discriminator and generator (replaced-token detection) on text",
                    description=DESCRIPTION, add_arguments=add_arguments, run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.errors import ConfigError

    flags = text_flags(args, FLAGS)
    base = None
    if args.preset is not None:
        from attnkit.models.bert import bert_preset

        try:
            base = {"model": bert_preset(args.preset, pooler=False)}
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return run_job(args, "electra", flags, base=base)
