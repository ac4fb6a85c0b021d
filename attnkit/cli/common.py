"""Helpers shared by the subcommands: ``--set`` overrides routed to the right config."""

from __future__ import annotations

import dataclasses
from typing import Any

from attnkit.config import Config
from attnkit.errors import ConfigError


def apply_overrides(assignments: list[str], configs: dict[str, Config]) -> dict[str, Config]:
    """Apply ``--set key=value`` to named configs.

    ``model.d_model=256`` and ``train.lr=2`` name the config; a bare ``d_model=256`` goes to
    the one config that has a field of that name (ambiguous or unknown names are errors).
    """
    out = dict(configs)
    for a in assignments:
        if "=" not in a:
            raise ConfigError(f"--set expects key=value, got {a!r}")
        key = a.split("=", 1)[0].strip()
        head = key.split(".", 1)[0]
        if head in out and "." in key:
            target, rest = head, a.split(".", 1)[1]
        else:
            owners = [n for n, c in out.items() if head in {f.name for f in dataclasses.fields(c)}]
            if not owners:
                known = ", ".join(f"{n}.{f.name}" for n, c in out.items() for f in dataclasses.fields(c))
                raise ConfigError(f"unknown config key {key!r} in --set; known keys: {known}")
            if len(owners) > 1:
                raise ConfigError(f"--set {key} is ambiguous; write {' or '.join(f'{o}.{key}' for o in owners)}")
            target, rest = owners[0], a
        out[target] = out[target].with_overrides([rest])
    return out


def add_set_argument(p: Any) -> None:
    p.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override a config field, e.g. --set d_model=256 --set train.lr=2 (repeatable; values parsed as JSON)",
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
