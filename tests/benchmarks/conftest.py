"""Load a script of ``benchmarks/`` as a module (they are scripts, not an installed package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported under ``<name>_bench``, with ``benchmarks/`` importable meanwhile."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


@pytest.fixture(scope="session")
def load_benchmark():
    """The loader above, as a fixture: ``load_benchmark("listops")``."""
    return _load
