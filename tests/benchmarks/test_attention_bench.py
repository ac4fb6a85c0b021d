"""``benchmarks/attention.py``: explicit rows (``--rows NAME[@VARIANT]:LENGTH``) and their variants."""

from __future__ import annotations

import json
import sys


def test_rows_run_with_their_variants_on_cpu(load_benchmark, tmp_path, monkeypatch) -> None:
    bench = load_benchmark("attention")
    assert bench.VARIANTS["t64"] == {"flex_tiles": (64, 64)}
    kernel = bench.kernel_fn("bigbird@kv64")  # builds with the variant's parameters
    assert callable(kernel)
    argv = ["attention.py", "--device", "cpu", "--suffix=-t", "--out-dir", str(tmp_path),
            "--rows", "dense:64", "lsh@chunked:64", "bigbird@t64:128"]
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    (out,) = tmp_path.glob("attention-cpu-*-t.json")
    rows = json.loads(out.read_text())["results"]
    assert [(r["name"], r["length"]) for r in rows] == [("dense", 64), ("lsh@chunked", 64), ("bigbird@t64", 128)]
    assert all("median_ms" in r for r in rows), rows
    assert rows[2]["max_abs_err_vs_dense_mask"] < 1e-5  # checked against its dense mask before timing

