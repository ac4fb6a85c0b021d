"""Atomic file writes: write to a temporary file in the same directory, then rename; UTF-8 line reading.

``os.replace`` is atomic on POSIX when source and target are on one filesystem, so a
process killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator


_UMASK: int | None = None


def umask() -> int:
    """The process's file-creation mask (read once: ``os.umask`` can only be read by setting it)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0)
        os.umask(_UMASK)
    return _UMASK


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory's entries (a rename inside it) to the disk; a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically.

    The temporary file lies beside ``path`` (``.NAME.*.tmp``), gets the mode the umask gives a new
    file, and is flushed to the disk before the rename; the directory is flushed after it, so
    after a power loss ``path`` holds the old bytes or the new ones.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~umask())
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write(path, write)


def _settle_tree(root: Path) -> None:
    """Give every file and directory under ``root`` the mode the umask gives a new one (some writers, such as
    safetensors, create files 0600 whatever the umask) and flush it to the disk, the directories last."""
    file_mode, dir_mode = 0o666 & ~umask(), 0o777 & ~umask()
    for p in sorted(root.rglob("*"), reverse=True):
        if p.is_symlink():
            continue
        if p.is_file():
            os.chmod(p, file_mode)
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():
            os.chmod(p, dir_mode)
            fsync_directory(p)
    os.chmod(root, dir_mode)
    fsync_directory(root)


def atomic_directory(path: Path, fill: Callable[[Path], None]) -> None:
    """Build a directory with ``fill(tmp_dir)`` and swap it into place at ``path``.

    The new directory is built beside ``path`` (``.NAME.*.tmp``); it and everything in it get the
    modes the umask gives new files and directories and are flushed to the disk, and only then is
    it renamed to ``path``.
    If ``path`` already exists it is renamed aside to ``path`` + ``.old`` first and removed after
    the swap, so at every instant either the old or the new complete directory exists. Callers
    decide whether ``path`` may be replaced; this function replaces whatever is there.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        fill(tmp)
        _settle_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(path.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_directory(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def utf8_lines(f: Iterable[str], path: str | os.PathLike) -> Iterator[str]:
    """The lines of ``f`` (opened with ``encoding="utf-8"``); bytes that are not UTF-8 raise a one-line
    :class:`~attnkit.errors.DataError` naming ``path`` instead of a ``UnicodeDecodeError``."""
    from attnkit.errors import DataError

    try:
        yield from f
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; convert it, e.g. with iconv -t UTF-8") from None


def read_utf8(path: str | os.PathLike, what: str = "text file") -> str:
    """The text of ``path``; a missing file or bytes that are not UTF-8 raise a one-line
    :class:`~attnkit.errors.DataError` (``what`` names the file's role in the message)."""
    from attnkit.errors import DataError

    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a directory; give a file")
    if not path.is_file():
        raise DataError(f"{what} {path} does not exist")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}); "
                        "convert it, e.g. with iconv -t UTF-8") from None


def read_json_object(path: Path, error: type[Exception], what: str) -> dict:
    """The JSON object in ``path``; a missing file, invalid JSON or a non-object raises ``error`` naming ``what`` and the path."""
    import json

    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a directory; give a JSON file")
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{what} {path} is not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path} is not a JSON object")
    return data


def json_lines(text: str) -> list[tuple[str, dict]]:
    """``(line, record)`` for each line of a JSON-lines text that holds a whole JSON object.

    A line that does not parse is left out: the last one, cut short when a process was killed
    while appending it, is the case this serves.
    """
    import json

    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append((line, record))
    return out
