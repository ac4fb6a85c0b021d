"""What the subcommands share beyond the run options (attnkit.cli.runner): where progress lines go, and output files."""

from __future__ import annotations

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
