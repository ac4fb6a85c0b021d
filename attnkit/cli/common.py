"""What the subcommands share beyond the run options (attnkit.cli.runner): where progress lines go, output files,
the registration and run plumbing of a task subcommand, and the flags of the text-pretraining and SQuAD tasks."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnkit.errors import ConfigError


def progress_writer(plain: bool) -> Any:
    """``print`` without a progress bar, else ``tqdm.write`` (lines that do not break the bar)."""
    if plain:
        return print
    from tqdm.auto import tqdm

    return tqdm.write


def add_overwrite_argument(p: Any, what: str) -> None:
    """``--overwrite``: replace an existing non-empty ``what`` (without it, such a file is refused)."""
    p.add_argument("--overwrite", action="store_true", help=f"replace {what} if it exists (default: refuse)")


def check_output_file(path: Path, flag: str, *, overwrite: bool) -> None:
    """Refuse an output file that is a directory, or an existing non-empty file unless ``overwrite``.

    The file is then written beside its place and renamed onto it (:func:`attnkit.io.atomic_write`),
    so a failure leaves the old file as it was.

    Args:
        path: the output file.
        flag: the option that named it (``--output``), for the message.
        overwrite: the user asked to replace an existing file.

    Raises:
        ConfigError: the path is a directory, or a non-empty file and ``overwrite`` is False.
    """
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory; give a file name")
    if path.exists() and path.stat().st_size > 0 and not overwrite:
        raise ConfigError(f"{flag} {path} exists; add --overwrite to replace it, or choose another file")


def add_task_parser(subparsers: Any, task: str, *, help: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                    run: Callable[[argparse.Namespace], int], epilog: str | None = None, set_task: bool = False) -> argparse.ArgumentParser:
    """Register ``task`` among ``subparsers``: its own arguments, then the run options with ``--out runs/<task>``.

    Args:
        subparsers: the subcommands of ``attnkit train`` or ``attnkit finetune``.
        task: the subcommand's name, also the recipes' task and the default output directory's name.
        help: the one-line summary in the parent's listing.
        description: the text above the options (kept as written).
        add_arguments: adds the task's own options to the new parser.
        run: what the parsed arguments are handed to.
        epilog: the text below the options, if any.
        set_task: also set ``task`` on the parsed arguments to ``task``.

    Returns:
        The new parser.
    """
    from attnkit.cli.runner import add_run_arguments

    p = subparsers.add_parser(task, help=help, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    add_run_arguments(p, task, out=f"runs/{task}")
    p.set_defaults(run=run, **({"task": task} if set_task else {}))
    return p


def run_job(args: argparse.Namespace, task: str, flags: list[str], *, base: dict[str, Any] | None = None) -> int:
    """Run the job of ``task`` with the flags' assignments (before ``--set``); the command's exit status, 0."""
    from attnkit.cli.runner import run_command
    from attnkit.runs import job

    run_command(args, job(task), flags, base=base)
    return 0


def finetune_flags(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    """The given flags as assignments (``mapping``: attribute -> dotted key), plus the switches that keep a schedule key the user gave."""
    from attnkit.cli.finetune import schedule_flags
    from attnkit.cli.train import flag_assignments

    return schedule_flags(args, flag_assignments(args, mapping))


def add_text_arguments(g: Any, *, tokenizer_help: str) -> None:
    """``--text`` (one or more files), ``--tokenizer`` and ``--vocab-size`` of a pretraining task on raw text."""
    g.add_argument("--text", type=Path, nargs="+", metavar="FILE", help="UTF-8 text file(s) to pretrain on (sets data.text)")
    g.add_argument("--tokenizer", type=Path, metavar="FILE", help=tokenizer_help)
    g.add_argument("--vocab-size", type=int, help="size of the learned WordPiece vocabulary (sets data.vocab_size; default 8000)")


def add_sequence_arguments(g: Any) -> None:
    """``--max-seq-len``, ``--documents`` and ``--sentences``: how the text is cut into packed sentence sequences."""
    g.add_argument("--max-seq-len", type=int, help="tokens per sequence, specials included (sets data.max_seq_len; default 128)")
    g.add_argument("--documents", choices=("paragraphs", "files"), help="what a document is (sets data.documents)")
    g.add_argument("--sentences", choices=("lines", "punct"), help="what a sentence is (sets data.sentences)")


def text_flags(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    """The given flags as assignments (``mapping``: attribute -> dotted key), plus ``data.text`` as a JSON list of the ``--text`` files."""
    from attnkit.cli.train import flag_assignments

    flags = flag_assignments(args, mapping)
    if args.text is not None:
        flags.append(f"data.text={json.dumps([str(t) for t in args.text])}")
    return flags


def add_squad_arguments(g: Any, *, data_help: str) -> None:
    """``--train``, ``--dev``, ``--data`` and ``--split-articles``: the SQuAD v1.1 JSON files of a question-answering task."""
    g.add_argument("--train", type=Path, metavar="FILE", help="SQuAD v1.1 JSON to train on (sets data.train)")
    g.add_argument("--dev", type=Path, metavar="FILE", help="SQuAD v1.1 JSON to evaluate on (sets data.dev)")
    g.add_argument("--data", type=Path, metavar="FILE", help=data_help)
    g.add_argument("--split-articles", type=int, metavar="N", help="evaluate on the last N articles of --data (sets data.split_articles)")
