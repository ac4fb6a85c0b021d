"""benchmarks/peft_adapt.py: the step times read from the Trainer's logging windows, and the quick mode end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("peft_adapt")


def _metrics(path: Path, records: list[dict]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_step_times_sum_the_windows_and_leave_out_the_first_and_the_evaluations(bench, tmp_path):
    run = _metrics(tmp_path / "run", [
        {"step": 2, "loss": 3.0, "tokens": 400, "tokens_per_s": 100.0},  # 4 s: warm-up window
        {"step": 2, "eval/loss": 2.9},  # an evaluation record: no time of its own
        {"step": 5, "loss": 2.5, "tokens": 600, "tokens_per_s": 400.0},  # 1.5 s for 3 steps
        {"step": 6, "loss": 2.4, "tokens": 200, "tokens_per_s": 400.0},  # 0.5 s for 1 step
    ])
    assert bench.step_times(run, 6) == {"train_s": 6.0, "step_ms": 500.0}
    with pytest.raises(RuntimeError, match="cover 6 steps, not 7"):
        bench.step_times(run, 7)
    one = _metrics(tmp_path / "one", [{"step": 3, "tokens": 30, "tokens_per_s": 10.0}])
    assert bench.step_times(one, 3) == {"train_s": 3.0, "step_ms": None}


def test_quick_run_reports_each_time_and_passes_its_checks(bench, tmp_path):
    if not (DATA / "multi30k" / "train.en.gz").is_file() or not (DATA / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"no multi30k or tinyshakespeare under {DATA}")
    code = bench.main(["--data", str(DATA), "--quick", "--device", "cpu", "--work", str(tmp_path / "work"),
                       "--out-dir", str(tmp_path / "out"), "--set", "data.sample_tokens=0", "--set", "train.seed=7"])
    assert code == 0
    for name in ("lora", "full"):  # --set reaches both adaptations, not the base
        saved = json.loads((tmp_path / "work" / name / "run_config.json").read_text())
        assert saved["data"]["sample_tokens"] == 0 and saved["train"]["seed"] == 7
    assert json.loads((tmp_path / "work" / "stages" / "shakespeare-char" / "run_config.json").read_text())["train"]["seed"] != 7
    payload = json.loads(next((tmp_path / "out").glob("peft-adapt-*-quick.json")).read_text())
    assert set(payload["times"]) == {"step_ms", "train_s", "wall_s"}
    for name, row in payload["runs"].items():
        windows = [json.loads(line) for line in (tmp_path / "work" / name / "metrics.jsonl").read_text().splitlines()]
        seconds = [r["tokens"] / r["tokens_per_s"] for r in windows if "tokens_per_s" in r]
        assert row["train_s"] == pytest.approx(sum(seconds), abs=1e-3)
        assert row["step_ms"] == pytest.approx(1e3 * sum(seconds[1:]) / (row["steps"] - windows[0]["step"]), abs=1e-3)
        assert 0 < row["train_s"] <= row["wall_s"]
    assert all(payload["checks"].values())
