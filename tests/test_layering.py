"""Layering: each package imports alone, models never import the hub, the library never imports the CLI."""

from __future__ import annotations

import ast
import multiprocessing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "attnkit"
PACKAGES = sorted(
    ".".join(p.relative_to(ROOT).parent.parts) for p in PACKAGE.rglob("__init__.py")
) + ["attnkit.loading", "attnkit.evaluation", "attnkit.attention.benchmark"]


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module named by an ``import`` or ``from ... import`` statement in ``path``, wherever
    it stands (module level or inside a function); relative imports resolved against ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = list(path.relative_to(root).with_suffix("").parts)[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)  # ``from attnkit import cli``
    return names


def offenders(files: list[Path], forbidden: str, root: Path = ROOT) -> list[str]:
    return sorted(
        f"{f.relative_to(root)}: {m}"
        for f in files
        for m in imported_modules(f, root)
        if m == forbidden or m.startswith(forbidden + ".")
    )


def test_the_static_check_sees_every_form_of_import(tmp_path: Path) -> None:
    """The check itself: each statement form that names the hub is caught, wherever it stands."""
    probe = tmp_path / "attnkit" / "models" / "probe.py"
    probe.parent.mkdir(parents=True)
    forms = ["import attnkit.hub", "from attnkit.hub import bert", "from attnkit import hub",
             "def f():\n    from attnkit.hub.gpt2 import load_hf_gpt2", "from ..hub import keymap"]
    for form in forms:
        probe.write_text(form + "\n")
        assert offenders([probe], "attnkit.hub", tmp_path), form
    probe.write_text("import attnkit.models.base\nfrom attnkit.hubris import x\nfrom . import gpt\n")
    assert not offenders([probe], "attnkit.hub", tmp_path)


def test_models_never_import_the_hub() -> None:
    files = sorted((PACKAGE / "models").rglob("*.py"))
    assert files
    assert offenders(files, "attnkit.hub") == []


def test_the_library_never_imports_the_cli() -> None:
    files = sorted(f for f in PACKAGE.rglob("*.py") if "cli" not in f.relative_to(PACKAGE).parts)
    assert offenders(files, "attnkit.cli") == []


def test_benchmarks_never_import_cli_library_code() -> None:
    """Benchmarks take kernels, scoring and loading from the library (running the command line
    itself through ``attnkit.cli.main`` is the one use of the CLI they may make)."""
    files = sorted((ROOT / "benchmarks").glob("*.py"))
    moved = ("attnkit.cli.bench", "attnkit.cli.evaluate_labelled", "attnkit.cli.finetune")
    assert [o for name in moved for o in offenders(files, name)] == []


# Each package's import runs in a process forked from multiprocessing's fork server, a fresh interpreter that has
# imported torch and torch._dynamo and no attnkit module (every attnkit package loads both before its own code):
# the torch import is paid once instead of once a package.
IMPORT_ALONE = """
import sys, traceback
try:
    loaded = sorted(m for m in sys.modules if m.partition(".")[0] == "attnkit")
    assert not loaded, f"attnkit modules loaded before the import: {{loaded}}"
    import {module}
except BaseException:
    with open({report!r}, "w") as f:
        f.write(traceback.format_exc())
    raise SystemExit(1)
"""


@pytest.fixture(scope="module")
def fresh_interpreter():
    """The fork server's context, its preloads set (they take effect when the server starts, at the first process)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo"])
    return ctx


@pytest.mark.parametrize("module", PACKAGES)
def test_each_package_imports_alone(module: str, fresh_interpreter, tmp_path: Path) -> None:
    """A fresh interpreter imports the package first: no cycle hidden by an earlier import."""
    report = tmp_path / "traceback.txt"
    proc = fresh_interpreter.Process(target=exec, args=(IMPORT_ALONE.format(module=module, report=str(report)), {}))
    proc.start()
    proc.join(timeout=120)
    if proc.is_alive():
        proc.kill()
    assert proc.exitcode == 0, report.read_text()[-2000:] if report.is_file() else f"exit code {proc.exitcode}"
