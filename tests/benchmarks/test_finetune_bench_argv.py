"""benchmarks/finetune.py builds the command lines it claims to run (no training here)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("finetune_bench", ROOT / "benchmarks" / "finetune.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def parse(argv: list[str]) -> argparse.Namespace:
    """What ``attnkit finetune`` itself makes of a command line."""
    from attnkit.cli.main import build_parser

    return build_parser().parse_args(argv)


@pytest.mark.parametrize("task", ["sst2", "rte", "wnut17", "xquad"])
def test_epochs_and_sets_override_the_recipe(bench, task):
    args = argparse.Namespace(model=Path("m"), device="cpu", quick=False, epochs=7.0, set=["train.lr=3e-5"])
    argv = bench.task_argv(task, Path("d"), Path("o"), args)
    parsed = parse(argv)
    assert parsed.epochs == 7.0
    assert argv[-2:] == ["--set", "train.lr=3e-5"]  # after the recipe's own lr: the last one wins


def test_recipe_epochs_without_override(bench):
    args = argparse.Namespace(model=Path("m"), device="cpu", quick=False, epochs=None, set=[])
    assert parse(bench.task_argv("wnut17", Path("d"), Path("o"), args)).epochs == 5.0
