"""benchmarks/positions_speed.py --quick on the CPU: every row checked against the dense T5 path, timed and profiled."""

import json


def test_quick_run_checks_times_and_profiles(load_benchmark, tmp_path):
    bench = load_benchmark("positions_speed")
    assert bench.main(["--quick", "--device", "cpu", "--kinds", "learned", "alibi", "t5_bias:flex_band", "t5_bias:distance",
                       "--profile", "2", "--out-dir", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("positions-speed-quick*.json")
    result = json.loads(path.read_text())
    for table in ("layer", "model"):
        rows = result[table]
        assert set(rows) >= {"learned", "alibi", "t5_bias:flex_band", "t5_bias:distance"}
        assert rows["learned"]["ratio_vs_learned"] == 1.0
        for kind in ("t5_bias:flex_band", "t5_bias:distance"):
            assert "error" not in rows[kind]["check"]
        for row in rows.values():
            got = row["profile"]
            top = got["top"]
            assert got["wall_ms_per_step"] > 0 and got["device_busy_ms_per_step"] is None  # no CUDA: no device time
            assert top and all(r["ms_per_step"] > 0 and r["calls_per_step"] > 0 for r in top)
            assert [r["ms_per_step"] for r in top] == sorted((r["ms_per_step"] for r in top), reverse=True)
            assert len({r["name"] for r in top}) == len(top)  # each name once
    assert result["model"]["t5_bias:distance"]["check"]["table_grad_vs_dense_rel"] < 1e-5
