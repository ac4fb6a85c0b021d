"""benchmarks/norms.py: the quick mode end to end on a Multi30k sample, and the JSON it writes."""

from __future__ import annotations

import json
import math

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("norms")


@pytest.fixture(scope="module")
def result(bench, multi30k_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("norms")
    path = bench.main(["--data", str(multi30k_sample), "--quick", "--device", "cpu", "--out-dir", str(out)])
    return json.loads(path.read_text())


def test_every_norm_at_both_batches_with_a_curve_and_bleu(result):
    rows = {(r["norm"], r["divisor"]): r for r in result["runs"]}
    assert set(rows) == {(n, d) for n in ("layer", "rms", "batch") for d in (1, 8)}
    for (norm, divisor), r in rows.items():
        assert r["model"]["norm"] == norm
        assert r["recipe"] == ("multi30k-de-en" if norm == "layer" else f"multi30k-de-en-norm-{norm}")
        steps = [e["step"] for e in r["evals"]]
        assert len(steps) >= 2 and steps == sorted(steps) and steps[-1] == r["steps"]
        assert all(math.isfinite(e["loss"]) and e["loss"] > 0 for e in r["evals"])
        assert r["valid_loss_last_eval"] == r["evals"][-1]["loss"]
        assert 0.0 <= r["bleu"] <= 100.0 and 0.0 <= r["bleu_lc"] <= 100.0 and "tok:13a" in r["bleu_signature"]
        assert r["seconds"] > r["train_loop_s"] > 0
    for norm in ("layer", "rms", "batch"):
        full, small = rows[(norm, 1)], rows[(norm, 8)]
        assert small["max_tokens"] == full["max_tokens"] // 8 and small["steps"] == full["steps"]
        assert small["overrides"] == [f"data.max_tokens={small['max_tokens']}"] and full["overrides"] == []
        assert norm in result["table"]
    # the same seed and batches: the curves differ only because the norm does
    assert rows[("batch", 1)]["evals"] != rows[("layer", 1)]["evals"] != rows[("rms", 1)]["evals"]


def test_each_run_holds_only_its_own_norm_layers(result):
    """A post-norm encoder-decoder normalises after each sub-layer: 2 per encoder layer, 3 per decoder layer."""
    expected = {"layer": "LayerNorm", "rms": "RMSNorm", "batch": "MaskedBatchNorm"}
    for r in result["runs"]:
        m = r["model"]
        assert m["norm_position"] == "post"
        assert r["norm_layers"] == {expected[r["norm"]]: 2 * m["n_encoder_layers"] + 3 * m["n_decoder_layers"]}


def test_a_divisor_below_two_is_a_usage_error(bench, multi30k_sample, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--data", str(multi30k_sample), "--quick", "--divisors", "1"])
    assert e.value.code == 2 and "--divisors 1" in capsys.readouterr().err
