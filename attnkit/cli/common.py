"""What the subcommands share beyond the run options (attnkit.cli.runner): where progress lines go."""

from __future__ import annotations

from typing import Any


def progress_writer(plain: bool) -> Any:
    """``print`` without a progress bar, else ``tqdm.write`` (lines that do not break the bar)."""
    if plain:
        return print
    from tqdm.auto import tqdm

    return tqdm.write
