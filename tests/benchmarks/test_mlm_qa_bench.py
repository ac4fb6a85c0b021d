"""benchmarks/mlm_qa.py: the answering speed can be timed in a later call, from the runs an earlier call kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture()
def bench(load_benchmark):
    if not (DATA / "squad" / "xquad.en.json").is_file():
        pytest.skip(f"XQuAD not found under {DATA}")
    return load_benchmark("mlm_qa")


def test_timing_alone_reads_the_runs_of_an_earlier_train_call(bench, tmp_path: Path) -> None:
    def call(recipes: str, parts: str) -> None:
        bench.main(["--data", str(DATA), "--quick", "--device", "cpu", "--recipes", recipes, "--parts", parts,
                    "--work", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "r")])

    call("extractive", "train")
    (path,) = (tmp_path / "r").glob("mlm-qa-*.json")
    scores = json.loads(path.read_text())["results"]["extractive"]
    assert "exact_match" in scores and "answers_per_s" not in scores  # trained and scored, not timed
    call("extractive", "timing")
    after = json.loads(path.read_text())
    timed = after["results"]["extractive"]
    assert {k: timed[k] for k in scores} == scores and timed["answers_per_s"] > 0  # the scores kept, the speed added
    assert set(after["commands"]) == {"extractive"}
    with pytest.raises(SystemExit, match="no finished xquad-mlm-qa run"):
        call("mlm", "timing")
    with pytest.raises(SystemExit, match="needs --work"):
        bench.main(["--data", str(DATA), "--quick", "--device", "cpu", "--parts", "timing"])
