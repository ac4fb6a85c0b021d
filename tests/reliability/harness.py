"""The bad-input harness: run one command as a user would and check the promises.

A user's mistake gets exit status 2 and one line on stderr that names the problem, no
traceback, and every file that existed before the command has the same bytes after it.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def run_cli(args: str | list[str], cwd: Path, *, stdin: str | None = None, timeout: float = 120) -> Outcome:
    """``attnkit ARGS`` in a subprocess in ``cwd`` (``args`` as a shell-like string or a list)."""
    argv = shlex.split(args) if isinstance(args, str) else [str(a) for a in args]
    proc = subprocess.run([sys.executable, "-m", "attnkit.cli.main", *argv], cwd=cwd, input=stdin, capture_output=True,
                          text=True, timeout=timeout, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(cwd)})
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(args: str | list[str], cwd: Path, *must_say: str, stdin: str | None = None) -> Outcome:
    """The command ends with exit 2 and one ``attnkit: error:`` line containing every ``must_say``, and changes no file under ``cwd``."""
    before = snapshot(cwd)
    out = run_cli(args, cwd, stdin=stdin)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.code == 2, f"exit {out.code}, stderr: {out.stderr[-2000:]}"
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("attnkit: error: "), out.stderr[-2000:]
    for text in must_say:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    after = snapshot(cwd)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert not changed, f"files changed or removed: {changed}"
    return out
