"""attnkit train t5|bart|mass: pretrain an encoder-decoder Transformer by denoising text."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_task_parser, run_job, text_flags

OBJECTIVES = {
    "t5": ("T5 span corruption (Raffel et al. 2020)",
           """15% of the tokens (data.t5.noise_density), in spans of mean length 3 (data.t5.mean_noise_span_length),
are replaced in the input by sentinels <extra_id_0>, <extra_id_1>, ...; the decoder writes each
sentinel followed by its span. The text is one token stream cut into runs of the raw length that
gives exactly --max-src-len input tokens (512 inputs: 568 raw tokens, 114 targets)."""),
    "bart": ("BART denoising (Lewis et al. 2020)",
             """Runs of whole sentences of a document are noised and the decoder reconstructs the run: text
infilling (spans of Poisson(3) length over 30% of the tokens, each replaced by one <mask>; a
zero-length span inserts one) and sentence permutation, the paper's final setting; token deletion
(data.bart.delete_ratio) and document rotation (data.bart.rotate) can be added."""),
    "mass": ("MASS (Song et al. 2019)",
             """One contiguous fragment of half of each run of sentences (data.mass.fragment_ratio) is replaced
by <mask> tokens in the encoder input, and the decoder predicts the fragment."""),
}
COMMON = """
  attnkit train {name} --recipe {name}-shakespeare --data-root DATA --out runs/{name}
  attnkit train {name} --text FILE [FILE ...] [--max-src-len 128] --out runs/{name}

A joint subword (BPE) vocabulary of --vocab-size pieces is learned from the text and the special
tokens of the objective are added to it. The noise is drawn anew every epoch; the last
data.valid_fraction of the documents are held out and noised once. Every train.eval.every steps
the held-out loss is printed, and the best model goes to OUT/model with its tokenizer: an
encoder-decoder Transformer that attnkit translate --model OUT/model decodes with.
Defaults: transformer-small with pre-norm (3+3 layers, d_model 256), AdamW lr 5e-4 with 100
warm-up steps then linear decay, 2,000 steps of 32 examples."""

FLAGS = {"vocab_size": "data.vocab_size", "max_src_len": "data.max_src_len", "documents": "data.documents"}


def add_arguments(p: argparse.ArgumentParser, name: str) -> None:
    """The options of the ``name`` objective (t5, bart or mass), in a group of that name."""
    g = p.add_argument_group(name)
    g.add_argument("--text", type=Path, nargs="+", metavar="FILE", help="UTF-8 text file(s) to pretrain on (sets data.text)")
    g.add_argument("--vocab-size", type=int, help="learned subword vocabulary, before the added tokens (sets data.vocab_size; "
                   "default 8000)")
    g.add_argument("--max-src-len", type=int, help="encoder tokens per example (sets data.max_src_len; default 128)")
    g.add_argument("--documents", choices=("paragraphs", "files"), help="what a document is (sets data.documents)")
    g.add_argument("--preset", help="Transformer preset to start from (default: transformer-small, pre-norm)")


def add_parser(tasks: Any) -> None:
    """Register ``t5``, ``bart`` and ``mass`` among the tasks of ``attnkit train``."""
    for name, (title, text) in OBJECTIVES.items():
        add_task_parser(tasks, name, help=f"pretrain an encoder-decoder by denoising: {title}",
                        description=f"Pretrain an encoder-decoder Transformer with {title}.\n" + COMMON.format(name=name) + "\n\n" + text,
                        add_arguments=partial(add_arguments, name=name), run=run, set_task=True)


def run(args: argparse.Namespace) -> int:
    from attnkit.cli.train import model_preset

    return run_job(args, args.task, text_flags(args, FLAGS), base=model_preset(args.task, args.preset))
