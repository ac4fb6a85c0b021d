"""attnkit train dialogue: a DialoGPT-style dialogue model on multi-turn dialogues."""

from __future__ import annotations

import argparse
from typing import Any

from attnkit.cli.runner import add_run_arguments, run_command

DESCRIPTION = """A DialoGPT-style dialogue model (Zhang et al. 2020): a GPT over the dialogue history.

  attnkit train dialogue --recipe shakespeare-dialogue --data-root DATA --out runs/dialogue
  attnkit train dialogue --text dialogues.txt --set model.context=256 --out runs/dialogue
  attnkit chat --model runs/dialogue/model

The file holds one turn per line with a blank line between dialogues and optional SPEAKER:
prefixes (--format lines), or SPEAKER: on a line of its own above the speech with a blank line
between turns, as tiny Shakespeare (--format play). Each turn is opened by a speaker-segment token
and closed by an end-of-turn token; windows of whole turns that fit model.context train, with the
loss on the responses only (every turn after a window's first). The best model by validation
loss goes to OUT/model with its tokenizer."""

FLAGS = {"text": "data.text", "format": "data.format", "tokenizer": "data.tokenizer"}


def add_parser(tasks: Any) -> None:
    """Register ``dialogue`` among the tasks of ``attnkit train``."""
    from pathlib import Path

    p = tasks.add_parser("dialogue", help="a DialoGPT-style dialogue model on multi-turn dialogues", description=DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("dialogue")
    g.add_argument("--text", type=Path, help="the dialogues, a UTF-8 file (sets data.text)")
    g.add_argument("--format", choices=["lines", "play"], help="lines (default) or play (sets data.format)")
    g.add_argument("--tokenizer", choices=["char", "bpe"], help="character level (default) or byte-level BPE (sets data.tokenizer)")
    g.add_argument("--preset", help="GPT preset to start from (default: char-shakespeare)")
    add_run_arguments(p, "dialogue", out="runs/dialogue")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.cli.train import flag_assignments, model_preset
    from attnkit.runs import job

    run_command(args, job("dialogue"), flag_assignments(args, FLAGS), base=model_preset("lm", args.preset))
    return 0
