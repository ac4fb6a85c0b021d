"""benchmarks/finetune.py runs the fine-tuning recipes by name: stages, seeds and soups (the run path faked here)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("finetune")


def bench_args(**kw) -> argparse.Namespace:
    base = dict(data=Path("d"), device="cpu", quick=False, set=[], no_stages=False, seeds=None, soup=0)
    return argparse.Namespace(**{**base, **kw})


@pytest.mark.parametrize("task, recipe, kind, metric", [("sst2", "sst2-minilm", "classify", "accuracy"),
                                                        ("rte", "rte-minilm", "classify", "accuracy"),
                                                        ("wnut17", "wnut17-minilm", "ner", "f1"), ("xquad", "xquad-minilm", "qa", "f1"),
                                                        ("sst2-features", "sst2-minilm-features", "classify", "accuracy"),
                                                        ("wnut17-features", "wnut17-minilm-features", "ner", "f1")])
def test_each_task_runs_its_recipe(bench, task, recipe, kind, metric):
    r = bench.recipe_of(task)
    assert (r.name, r.task, bench.metric_name(task)) == (recipe, kind, metric)


def test_the_feature_based_tasks_freeze_the_encoder_their_fine_tuned_twins_train(bench):
    for task in ("sst2", "wnut17"):
        assert bench.recipe_of(task).data.features == "none"  # type: ignore[attr-defined]
        assert bench.recipe_of(f"{task}-features").data.features == "last4"  # type: ignore[attr-defined]
    assert "sst2-features" not in bench.DEFAULT_TASKS


def test_recorded_command_is_one_attnkit_parses(bench):
    from attnkit.cli.main import build_parser

    line = bench.command_line("rte", Path("o"), bench_args(quick=True), ["train.seed=3", "train.optim.lr=1e-5"])
    parsed = build_parser().parse_args(line.split()[1:])
    assert (parsed.command, parsed.recipe, parsed.data_root, parsed.out, parsed.quick) == ("finetune", "rte-minilm", Path("d"), Path("o"), True)
    assert parsed.set == ["train.seed=3", "train.optim.lr=1e-5"]


class FakeRunPath:
    """Stand-ins for run_stages and runs.run that record what the benchmark asks of them."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.stage_calls, self.runs = tmp, [], []

    def run_stages(self, recipe, out, *, quick, root, progress):
        self.stage_calls.append((recipe.name, Path(out), quick, root))
        return [f"data.model={json.dumps(str(Path(out) / 'stages' / 'tapt' / 'model'))}"]

    def run(self, job, cfgs, out, *, progress, recipe):
        self.runs.append((recipe, cfgs, Path(out)))
        seed = cfgs["train"].seed
        return SimpleNamespace(final={"accuracy": 0.5 + seed / 10, "best_step": 7}, result=SimpleNamespace(seconds=1.0, step=9),
                               model_dir=Path(out) / "model")


@pytest.fixture
def fake(bench, tmp_path, monkeypatch):
    f = FakeRunPath(tmp_path)
    monkeypatch.setattr(bench, "run_stages", f.run_stages)
    monkeypatch.setattr(bench.runs, "run", f.run)
    return f


def test_one_run_feeds_the_stage_model_and_the_overrides(bench, fake, tmp_path):
    row = bench.run_task("sst2", bench_args(set=["train.optim.lr=1e-5", "train.steps=40"]), tmp_path)
    assert fake.stage_calls == [("sst2-minilm", tmp_path / "sst2", False, Path("d"))]
    ((recipe, cfgs, out),) = fake.runs
    assert recipe == "sst2-minilm" and out == tmp_path / "sst2"
    assert cfgs["data"].model == str(tmp_path / "sst2" / "stages" / "tapt" / "model")
    assert cfgs["data"].train == str((Path("d") / "sst2" / "train.tsv").absolute())  # the recipe's file under --data
    assert cfgs["train"].optim.lr == 1e-5 and cfgs["train"].steps == 40
    assert cfgs["data"].steps_from_epochs is False  # a given train.steps is taken as given, as on the command line
    assert cfgs["train"].optim.layer_decay == 0.85  # the rest is the recipe's
    assert row["value"] == 0.5 and row["metric"] == "dev accuracy" and row["met"] is False


def test_no_stages_fine_tunes_the_named_model(bench, fake, tmp_path):
    bench.run_task("rte", bench_args(no_stages=True, set=["data.model=/m"]), tmp_path)
    assert fake.stage_calls == [] and fake.runs[0][1]["data"].model == "/m"


def test_seeds_each_run_their_own_stage_and_are_averaged(bench, fake, tmp_path):
    row = bench.run_task("rte", bench_args(seeds=[1, 3]), tmp_path)
    assert [c[1] for c in fake.stage_calls] == [tmp_path / "rte-seed1", tmp_path / "rte-seed3"]
    assert [(r[1]["train"].seed, r[2]) for r in fake.runs] == [(1, tmp_path / "rte-seed1"), (3, tmp_path / "rte-seed3")]
    assert row["value"] == pytest.approx((0.6 + 0.8) / 2) and [r["seed"] for r in row["runs"]] == [1, 3]


def test_soup_runs_one_stage_for_every_seed(bench, fake, tmp_path, monkeypatch):
    soups = []
    monkeypatch.setattr(bench, "make_soup", lambda models, out: soups.append((models, out)))
    monkeypatch.setattr(bench, "model_probabilities", lambda *a, **k: (None, None, None, None))
    monkeypatch.setattr(bench, "metric_of", lambda *a: 0.75)
    row = bench.run_task("sst2", bench_args(soup=3), tmp_path)
    assert [c[1] for c in fake.stage_calls] == [tmp_path / "sst2"]  # one starting point
    fed = {r[1]["data"].model for r in fake.runs}
    assert fed == {str(tmp_path / "sst2" / "stages" / "tapt" / "model")}
    assert [r[1]["train"].seed for r in fake.runs] == [0, 1, 2]
    assert soups == [([tmp_path / f"sst2-seed{i}" / "model" for i in range(3)], tmp_path / "sst2" / "model")]
    assert row["value"] == 0.75 and row["ingredients_mean"] == pytest.approx(0.6)


def test_tasks_run_as_separate_calls_share_one_file(bench, fake, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.common, "pick_device", lambda _: __import__("torch").device("cpu"))
    common = ["--data", "d", "--seeds", "0", "1", "--tag", "features", "--out-dir", str(tmp_path / "res"), "--device", "cpu"]
    for tasks in ("sst2", "sst2-features", "sst2"):
        assert bench.main(["--tasks", tasks, "--out", str(tmp_path / f"runs-{len(fake.runs)}"), *common]) == 0
    (path,) = (tmp_path / "res").glob("finetune-*-features.json")
    payload = json.loads(path.read_text())
    assert [r["task"] for r in payload["rows"]] == ["sst2-features", "sst2"]  # sst2 run again: its row replaced, not doubled
    assert set(payload["commands"]) == {"sst2", "sst2-features"} and payload["recipes"]["sst2-features"] == "sst2-minilm-features"
    assert bench.main(["--tasks", "sst2", "--set", "train.steps=3", "--out", str(tmp_path / "runs-x"), *common]) == 0
    assert [r["task"] for r in json.loads(path.read_text())["rows"]] == ["sst2"]  # other overrides: the old rows are not mixed in


def test_a_call_with_the_stages_does_not_join_rows_without_them(bench, fake, tmp_path, monkeypatch):
    monkeypatch.setattr(bench.common, "pick_device", lambda _: __import__("torch").device("cpu"))
    common = ["--data", "d", "--seeds", "0", "--tag", "features", "--out-dir", str(tmp_path / "res"), "--device", "cpu"]
    assert bench.main(["--tasks", "sst2-features", "--no-stages", "--out", str(tmp_path / "a"), *common]) == 0
    assert bench.main(["--tasks", "sst2", "--out", str(tmp_path / "b"), *common]) == 0
    (path,) = (tmp_path / "res").glob("finetune-*-features.json")
    payload = json.loads(path.read_text())
    assert [r["task"] for r in payload["rows"]] == ["sst2"] and payload["no_stages"] is False
