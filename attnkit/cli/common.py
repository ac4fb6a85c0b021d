"""Helpers shared by the subcommands: ``--set`` overrides routed to the right config."""

from __future__ import annotations

import dataclasses
from typing import Any

from attnkit.config import Config, apply_overrides  # noqa: F401  (re-exported for the subcommands)
from attnkit.errors import ConfigError


def add_set_argument(p: Any) -> None:
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config field, e.g. --set d_model=256 --set train.optim.lr=2 (repeatable; values parsed as JSON)",
    )


def progress_writer(plain: bool) -> Any:
    """``print`` without a progress bar, else ``tqdm.write`` (lines that do not break the bar)."""
    if plain:
        return print
    from tqdm.auto import tqdm

    return tqdm.write


def report_training(result: Any, out: Any, metric: str) -> None:
    """The two closing lines of a training command: steps, time and best ``metric``; where the model is."""
    best = f"; best {metric} {result.best:.4f} at step {result.best_step}" if result.best is not None else ""
    print(f"trained {result.step} steps in {result.seconds:.1f}s{best}")
    print(f"model saved to {out / 'model'}")
