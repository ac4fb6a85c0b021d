"""``benchmarks/seq2seq_decode.py``: every variant decodes exactly ``--steps`` tokens per sentence."""

from __future__ import annotations

import json


def test_every_sentence_decodes_the_requested_steps(load_benchmark, tmp_path) -> None:
    bench = load_benchmark("seq2seq_decode")
    argv = ["--device", "cpu", "--small", "--sentences", "10", "--batch", "4", "--steps", "5", "--repeats", "1",
            "--out-dir", str(tmp_path), "--tag", "t"]
    assert bench.main(argv) == 0
    (out,) = tmp_path.glob("seq2seq-decode-cpu-*-small-t.json")
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"greedy kv-cache", "beam4 kv-cache", "beam4 no-cache"}
    for name, r in results.items():
        assert r["output_lengths"] == [5], name  # the zeroed EOS row: no sentence ends early
        assert len(r["seconds"]) == 1 and r["sentences_per_s"] > 0
