"""benchmarks/llama_train_speed.py --quick on the CPU: both models hold the same weights, every mode is timed, the JSON is written."""

from __future__ import annotations

import json
import sys

import pytest

pytest.importorskip("transformers")


def test_quick_run_checks_parity_and_writes_json(load_benchmark, tmp_path, monkeypatch):
    bench = load_benchmark("llama_train_speed")
    monkeypatch.setattr(sys, "argv", ["llama_train_speed.py", "--quick", "--device", "cpu", "--results", str(tmp_path)])
    bench.main()
    (path,) = tmp_path.glob("llama-train-cpu-*-quick.json")
    data = json.loads(path.read_text())
    assert data["logits_max_abs_diff_fp32"] < 1e-5
    assert set(data["train"]["modes"]) == {"hf eager", "attnkit eager"}
    assert all(m["tokens_per_s"] > 0 for m in data["train"]["modes"].values())
    assert "attnkit eager vs hf eager" in data["train"]["ratios"] and data["environment"]["transformers"]
