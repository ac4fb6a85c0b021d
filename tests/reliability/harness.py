"""The bad-input harness: run one command as a user would and check the promises.

A user's mistake gets exit status 2 and one line on stderr that names the problem, no
traceback, and every file that existed before the command has the same bytes after it.
"""

from __future__ import annotations

import hashlib
import shlex
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


def run_cli(args: str | list[str], cwd: Path, *, stdin: str | None = None) -> Outcome:
    """``attnkit ARGS`` run in this process with ``cwd`` as the working directory (``args`` as a shell-like string or a list).

    In-process keeps the battery fast (no interpreter and torch start per case); an exception
    that escapes the CLI's error mapping is printed as a traceback to ``stderr`` with exit 1,
    as the ``attnkit`` script would show it. Cases about processes and pipes start their own.
    """
    import io
    import os
    import traceback
    from contextlib import redirect_stderr, redirect_stdout

    from attnkit.cli.main import main

    argv = shlex.split(args) if isinstance(args, str) else [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    here, old_stdin = os.getcwd(), sys.stdin
    os.chdir(cwd)
    try:
        sys.stdin = io.StringIO(stdin or "")
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # argparse: --help (0) or a usage error (2)
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
            except BaseException:  # noqa: BLE001 - what a user would see as a traceback
                traceback.print_exc(file=err)
                code = 1
    finally:
        sys.stdin = old_stdin
        os.chdir(here)
    return Outcome(int(code or 0), out.getvalue(), err.getvalue())


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
