"""attnkit recipes: list the named recipes, one line each, or show one in full."""

from __future__ import annotations

import argparse
from typing import Any

DESCRIPTION = """List the named recipes: the runs behind every published figure.

  attnkit recipes                 one line each: name, command, what it trains, the figure it reached
  attnkit recipes NAME            the recipe's command and every setting

Run one with its task's command, e.g.
  attnkit train translate --recipe multi30k-de-en --data-root DATA --out runs/multi30k
and add --quick for its seconds-long CPU variant."""

COMMANDS = {"classify": "finetune classify", "ner": "finetune ner", "qa": "finetune qa", "fewshot": "finetune fewshot", "mlm-qa": "finetune mlm-qa"}


def command_of(task: str) -> str:
    """The CLI command that runs ``task``'s recipes (``train lm``, ``finetune classify``)."""
    return COMMANDS.get(task, f"train {task}")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("recipes", help="list the named recipes (the runs behind the published figures)", description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="show this recipe in full")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit import recipes

    if args.name is None:
        for r in recipes.all_recipes():
            figure = f" [{r.figure}]" if r.figure else ""
            print(f"{r.name:24s} attnkit {command_of(r.task):18s} {r.summary}{figure}")
        return 0
    from attnkit.cli.runner import describe
    from attnkit.runs import job

    r = recipes.get(args.name)
    print(f"{r.name}: {r.summary}")
    if r.figure:
        print(f"figure: {r.figure}")
    print(f"run: attnkit {command_of(r.task)} --recipe {r.name}" + (" --data-root DATA" if r.files else "") + " --out DIR")
    for stage in r.before:
        print(f"first: recipe {stage.recipe}, its model feeding {stage.feeds}")
    if r.on_cuda:
        print(f"on a CUDA device: {' '.join(r.on_cuda)}")
    if r.quick:
        print(f"--quick: {' '.join(r.quick)}")
    print(describe({**job(r.task).defaults(), **r.configs()}))
    return 0
