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
    args = argparse.Namespace(model=Path("m"), device="cpu", quick=False, epochs=7.0, set=["train.optim.lr=3e-5"])
    argv = bench.task_argv(task, Path("d"), Path("o"), args)
    parsed = parse(argv)
    assert parsed.epochs == 7.0
    assert argv[-2:] == ["--set", "train.optim.lr=3e-5"]  # after the recipe's own lr: the last one wins


def test_recipe_epochs_without_override(bench):
    args = argparse.Namespace(model=Path("m"), device="cpu", quick=False, epochs=None, set=[])
    assert parse(bench.task_argv("wnut17", Path("d"), Path("o"), args)).epochs == 5.0


def tapt_args(**kw) -> argparse.Namespace:
    base = dict(model=Path("m"), device="cpu", quick=False, epochs=None, set=[], tapt_steps=300, tapt_batch_size=16,
                tapt_max_seq_len=96, tapt_set=["train.optim.lr=5e-5"], data="d")
    return argparse.Namespace(**{**base, **kw})


def test_tapt_argv_is_a_train_mlm_command_line(bench):
    argv = bench.tapt_argv(Path("t.txt"), Path("o"), tapt_args())
    parsed = parse(argv)
    assert (parsed.command, parsed.model, parsed.text, parsed.out) == ("train", Path("m"), [Path("t.txt")], Path("o"))
    assert parsed.max_seq_len == 96
    assert parsed.preset is None and parsed.vocab_size is None  # --model brings both
    assert {"train.steps=300", "train.batch_size=16", "train.device=cpu"} <= set(parsed.set)
    assert argv[-2:] == ["--set", "train.optim.lr=5e-5"]  # --tapt-set last: it wins


def test_finetune_starts_from_the_tapt_model(bench):
    parsed = parse(bench.task_argv("sst2", Path("d"), Path("o"), tapt_args(), Path("o/sst2-tapt/model")))
    assert parsed.model == Path("o/sst2-tapt/model")


def test_tapt_text_is_training_sentences_only(bench, tmp_path):
    from attnkit.data.pretraining import read_documents

    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"train {i} \t1\n" for i in range(120)))
    (tmp_path / "sst2" / "dev.tsv").write_text("sentence\tlabel\ndev only\t0\n")
    (tmp_path / "rte").mkdir()
    (tmp_path / "rte" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta premise\ta hypothesis\tentailment\n")
    (tmp_path / "wnut17").mkdir()
    (tmp_path / "wnut17" / "wnut17train.conll").write_text("I\tO\nlove\tO\nParis\tB-location\n\nok\tO\n\n")
    sst2 = bench.train_sentences("sst2", tmp_path)
    assert sst2 == [f"train {i}" for i in range(120)]
    assert bench.train_sentences("rte", tmp_path) == ["a premise", "a hypothesis"]
    assert bench.train_sentences("wnut17", tmp_path) == ["I love Paris", "ok"]
    with pytest.raises(ValueError):
        bench.train_sentences("xquad", tmp_path)
    docs = read_documents([bench.write_tapt_text(sst2, tmp_path / "t" / "sst2.txt")])
    assert [len(d) for d in docs] == [50, 50, 20] and docs[0][0] == "train 0"


def test_run_task_fine_tunes_the_tapt_model_and_records_it(bench, tmp_path, monkeypatch):
    """``attnkit`` replaced by a stand-in that writes what the real commands write: the plumbing alone."""
    import json

    (tmp_path / "d" / "sst2").mkdir(parents=True)
    (tmp_path / "d" / "sst2" / "train.tsv").write_text("sentence\tlabel\na b\t1\nc d\t0\n")
    calls = []

    def fake_main(argv: list[str]) -> int:
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True, exist_ok=True)
        if argv[:2] == ["train", "mlm"]:
            (out / "start_eval.json").write_text(json.dumps({"step": 0, "mlm_loss": 3.0, "mlm_accuracy": 0.3, "loss": 3.0}))
            (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (
                {"step": 5, "loss": 2.9}, {"step": 5, "eval/mlm_loss": 2.5, "eval/mlm_accuracy": 0.4, "eval/loss": 2.5},
                {"step": 10, "eval/mlm_loss": 2.6, "eval/mlm_accuracy": 0.4, "eval/loss": 2.6})))
        else:
            (out / "eval.json").write_text(json.dumps({"task": "classify", "steps": 2, "seconds": 1.0, "step": 2, "accuracy": 0.9}))
        return 0

    monkeypatch.setattr(bench, "attnkit_main", fake_main)
    row = bench.run_task("sst2", tapt_args(data=str(tmp_path / "d"), tapt_steps=10), tmp_path / "o")
    assert [c[:2] for c in calls] == [["train", "mlm"], ["finetune", "classify"]]
    assert parse(calls[1]).model == tmp_path / "o" / "sst2-tapt" / "model"
    assert parse(calls[0]).text == [tmp_path / "o" / "tapt-data" / "sst2.txt"]
    t = row["tapt"]
    assert t["command"] == "attnkit " + " ".join(calls[0]) and t["steps"] == 10 and t["sentences"] == 2
    assert (t["start_mlm_loss"], t["final_mlm_loss"], t["best_mlm_loss"], t["best_step"]) == (3.0, 2.6, 2.5, 5)
    assert row["value"] == 0.9 and t["wall_s"] >= 0
    row = bench.run_task("sst2", tapt_args(data=str(tmp_path / "d"), tapt_steps=0), tmp_path / "o")
    assert row["tapt"] is None and parse(calls[-1]).model == Path("m")
