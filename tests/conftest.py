"""Shared test setup: one torch thread per session, GPU tests skipped cleanly where no CUDA device is present, data fixtures."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    """One intra-op thread for the whole session, set before any (module-scoped) fixture
    builds a model: test tensors are tiny, and extra threads only add synchronisation and
    noise on a shared 2-core machine."""
    torch.set_num_threads(1)


_REPO = Path(__file__).resolve().parents[1]
# $ATTNKIT_MULTI30K, else a copy inside the repo (.data/, git-ignored), else ../shared/data beside it.
MULTI30K_PLACES = [Path(p) for p in [os.environ.get("ATTNKIT_MULTI30K", "")] if p] or [
    _REPO / ".data" / "multi30k", _REPO.parent / "shared" / "data" / "multi30k",
]


@pytest.fixture(scope="session")
def multi30k_sample(tmp_path_factory) -> Path:
    """A directory with the first pairs of Multi30k (train 300, val 40, test_2016_flickr 40), gzipped like the original.

    Skips the test when no Multi30k copy is found (see ``MULTI30K_PLACES``).
    """
    found = [p for p in MULTI30K_PLACES if (p / "train.de.gz").is_file()]
    if not found:
        pytest.skip(f"Multi30k not found at {' or '.join(map(str, MULTI30K_PLACES))}")
    source = found[0]
    out = tmp_path_factory.mktemp("multi30k")
    for split, n in (("train", 300), ("val", 40), ("test_2016_flickr", 40)):
        for lang in ("de", "en"):
            with gzip.open(source / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
                lines = [next(f) for _ in range(n)]
            with gzip.open(out / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.writelines(lines)
    return out


class QuickRun:
    """One recipe's quick variant run once through the command line: exit code, printed text and output directory."""

    def __init__(self, code: int, out: str, err: str, path: Path) -> None:
        self.code, self.out, self.err, self.path = code, out, err, path


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory) -> Path:
    """A folder of this pytest session that all its pytest-xdist workers share (above each worker's own
    ``pytest-N/popen-gwK``; the session's own folder without xdist). Fixtures that build something
    once for the session keep it here under a ``filelock.FileLock``, so a worker waits for what
    another is building instead of building it again."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    root = root / "shared"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def quick_recipe_run(shared_tmp):
    """``run(name, data_root)``: ``attnkit <command> --recipe name --quick`` run once per session and shared.

    The recipe tests and the command-line tests check the same quick runs from different sides;
    tests that change a run (``--resume``) copy its directory first. Under pytest-xdist the workers
    share the runs too (``shared_tmp``, a file lock a recipe).
    """
    import contextlib
    import io
    import json

    from filelock import FileLock

    from attnkit import recipes
    from attnkit.cli.main import main
    from attnkit.cli.recipes import command_of

    root = shared_tmp / "quick-recipe-runs"
    root.mkdir(exist_ok=True)
    done: dict[str, QuickRun] = {}

    def run(name: str, data_root: Path) -> QuickRun:
        if name not in done:
            path, record = root / name / "run", root / f"{name}.json"
            with FileLock(str(root / f"{name}.lock")):
                if not record.is_file():
                    recipe = recipes.get(name)
                    argv = [*command_of(recipe.task).split(), "--recipe", name, "--quick", "--data-root", str(data_root), "--out",
                            str(path), "--no-progress"]
                    if recipe.task in ("reverse", "translate", "lm", "mlm", "listops"):
                        argv += ["--set", "train.device=cpu"]
                    out, err = io.StringIO(), io.StringIO()
                    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                        code = main(argv)
                    record.write_text(json.dumps({"code": code, "out": out.getvalue(), "err": err.getvalue()}))
                kept = json.loads(record.read_text())
            done[name] = QuickRun(kept["code"], kept["out"], kept["err"], path)
        return done[name]

    return run
