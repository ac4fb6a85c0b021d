"""Training checkpoints that survive being killed at any moment.

Layout under ``<out>/checkpoints/``::

    step-00000100/   config.json  model.safetensors  tokenizer.json  trainer_state.pt
    step-00000200/   ...
    latest           text file naming the newest complete step directory

Each step directory, ``trainer_state.pt`` included, is built under a temporary name
(``.step-XXXXXXXX.*.tmp``), flushed to the disk and renamed into place, and ``latest`` is
replaced atomically afterwards (``.latest.*.tmp``), so ``latest`` always names a complete
checkpoint, even after a power loss. Temporary names left by a killed writer are removed
by :func:`remove_orphans` when the run starts or resumes. Retention (``keep``) counts only
step directories; the Trainer never shares ``checkpoints/`` with another run. ``trainer_state.pt`` holds only tensors and plain Python values (optimizer
and scheduler state, RNG states, data position) and is read with ``weights_only=True``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch

from attnkit.errors import CheckpointError
from attnkit.io import atomic_write_text
from attnkit.models.base import PretrainedModel

STATE_NAME = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
# the names attnkit's own writers give unfinished files: atomic_directory's and atomic_write's temporaries
_TMP_DIR = re.compile(r"^\.step-\d{8}\.[A-Za-z0-9_]+\.tmp$")
_TMP_FILE = re.compile(r"^\.latest\.[A-Za-z0-9_]+\.tmp$")
_OLD_DIR = re.compile(r"^step-\d{8}\.old$")


def checkpoint_dir(out: Path) -> Path:
    return Path(out) / "checkpoints"


def save_checkpoint(out: Path, step: int, model: PretrainedModel, state: dict[str, Any], *, tokenizer: Any = None, keep: int = 5) -> Path:
    """Write ``step-XXXXXXXX`` atomically, point ``latest`` at it, keep the newest ``keep`` checkpoints."""
    root = checkpoint_dir(out)
    name = f"step-{step:08d}"
    raw = model._orig_mod if hasattr(model, "_orig_mod") else model  # unwrap torch.compile
    try:
        path = raw.save_pretrained(root / name, tokenizer=tokenizer, fill_more=lambda tmp: torch.save(state, tmp / STATE_NAME))
        atomic_write_text(root / "latest", name + "\n")
    except (OSError, RuntimeError) as e:
        # a full disk surfaces as OSError from Python's writes and as RuntimeError from torch.save's zip
        # writer; the temporary directory is already gone and ``latest`` still names the previous step
        raise CheckpointError(f"writing checkpoint {name} under {out} failed: {_first_line(e)}; {_free_space(root)}") from None
    for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def _free_space(root: Path) -> str:
    """``free space N MB on ROOT``, or a plain request to free space when the file system cannot be asked."""
    try:
        free = shutil.disk_usage(root if root.exists() else root.parent).free
    except OSError:
        return "free space on that disk or choose another --out"
    return f"free space on that disk ({free // 2**20} MB left) or choose another --out"


def remove_orphans(out: Path) -> list[Path]:
    """Remove what a killed checkpoint writer left under ``OUT/checkpoints``; return the removed paths.

    Only names attnkit's writers produce are touched: ``.step-XXXXXXXX.*.tmp`` directories,
    ``.latest.*.tmp`` files, ``trainer_state.pt.tmp`` inside a step directory, and a
    ``step-XXXXXXXX.old`` directory whose replacement is in place (one whose replacement is
    missing is renamed back, since it is the only copy of that step).
    """
    root = checkpoint_dir(out)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for p in sorted(root.iterdir()):
        if p.is_symlink():
            continue
        if p.is_dir() and _TMP_DIR.match(p.name):
            shutil.rmtree(p)
            removed.append(p)
        elif p.is_file() and _TMP_FILE.match(p.name):
            p.unlink()
            removed.append(p)
        elif p.is_dir() and _OLD_DIR.match(p.name):
            live = p.with_name(p.name[: -len(".old")])
            if live.exists():
                shutil.rmtree(p)
                removed.append(p)
            else:
                p.replace(live)
        elif p.is_dir() and _STEP_DIR.match(p.name) and (p / (STATE_NAME + ".tmp")).is_file():
            (p / (STATE_NAME + ".tmp")).unlink()
            removed.append(p / (STATE_NAME + ".tmp"))
    return removed


def list_checkpoints(out: Path) -> list[Path]:
    """Complete step directories, oldest first."""
    root = checkpoint_dir(out)
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name) and (p / STATE_NAME).is_file()]
    return sorted(dirs, key=lambda p: p.name)


def latest_checkpoint(out: Path) -> Path | None:
    """The directory ``latest`` names (or the newest complete one if ``latest`` is missing)."""
    root = checkpoint_dir(out)
    pointer = root / "latest"
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if (path / STATE_NAME).is_file():
            return path
    found = list_checkpoints(out)
    return found[-1] if found else None


def load_trainer_state(path: Path) -> dict[str, Any]:
    """Read ``trainer_state.pt`` with ``weights_only=True`` (no arbitrary pickles)."""
    f = Path(path) / STATE_NAME
    try:
        return torch.load(f, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{f} does not exist; {path} is not a resumable checkpoint") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file for the user
        raise CheckpointError(f"{f} cannot be read ({str(e).splitlines()[0][:200]}); the file is corrupt") from None
