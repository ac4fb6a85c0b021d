"""benchmarks/length_extrapolation.py: kinds run in separate calls end up in one table and one plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_kinds_of_separate_calls_share_the_days_file(load_benchmark, tmp_path: Path) -> None:
    if not (DATA / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"tiny Shakespeare not found under {DATA}")
    bench = load_benchmark("length_extrapolation")

    def call(*kinds: str) -> dict:
        bench.main(["--data-root", str(DATA), "--quick", "--device", "cpu", "--runs", str(tmp_path / "runs"),
                    "--out-dir", str(tmp_path / "r"), "--kinds", *kinds])
        (path,) = (tmp_path / "r").glob("length-extrapolation-*.json")
        assert path.with_suffix(".png").is_file()
        return json.loads(path.read_text())

    first = call("alibi")
    assert set(first["validation_loss"]) == {"alibi"} and first["lengths"] == [32, 64, 128, 256, 512]
    second = call("learned")
    assert set(second["validation_loss"]) == {"alibi", "learned"}  # the first call's row kept
    assert second["validation_loss"]["alibi"] == first["validation_loss"]["alibi"]
    assert second["validation_loss"]["learned"]["64"] is None  # no rows past the trained context
    assert set(second["commands"]) == set(second["train_seconds"]) == {"alibi", "learned"}
