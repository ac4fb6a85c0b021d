"""benchmarks/finetune.py builds the command lines it claims to run (no training here)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("finetune")


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
