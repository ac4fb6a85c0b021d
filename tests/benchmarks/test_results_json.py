"""Benchmarks write their JSON as pieces finish and merge calls of one device and date into one file."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def common(load_benchmark):
    return load_benchmark("peft_speed").common  # the helpers module, as the scripts import it


@pytest.fixture()
def env(common):
    return common.environment(torch.device("cpu"))


def test_a_later_call_reads_the_day_file_and_replaces_it_whole(common, env, tmp_path):
    assert common.read_day_json("x", env, tmp_path) == {}
    path = common.write_json("x", {"environment": env, "results": {"a": 1}}, tmp_path, suffix="-quick")
    assert path == common.results_path("x", env, tmp_path, suffix="-quick")
    assert path.name == f"x-cpu-{env['date'][:10]}-quick.json"
    payload = common.read_day_json("x", env, tmp_path, suffix="-quick")
    payload["results"]["b"] = 2
    common.write_json("x", payload, tmp_path, suffix="-quick")
    assert json.loads(path.read_text())["results"] == {"a": 1, "b": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left beside it


def _add_keys(out_dir: str, prefix: str, n: int) -> None:
    """A writer process: ``n`` locked read-modify-writes of the day file, each adding one key of its own."""
    import sys
    import time
    from pathlib import Path as P

    sys.path.insert(0, str(P(__file__).resolve().parents[2]))
    from benchmarks import common as c

    def add(payload: dict, key: str) -> None:
        payload.setdefault("keys", {})[key] = 1
        time.sleep(0.01)  # between the read and the write: without the lock the other writer's updates get lost here

    env = c.environment(torch.device("cpu"))
    for i in range(n):
        c.update_day_json("x", env, lambda d, k=f"{prefix}{i}": add(d, k), P(out_dir))


def test_concurrent_calls_each_keep_what_the_other_wrote(common, env, tmp_path):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    writers = [ctx.Process(target=_add_keys, args=(str(tmp_path), p, 40)) for p in "ab"]
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    payload = common.read_day_json("x", env, tmp_path)
    keys = payload["keys"]
    assert payload["environment"]["date"][:10] == env["date"][:10]  # the writer's environment, set for every update
    assert sorted(keys) == sorted(f"{p}{i}" for p in "ab" for i in range(40))  # no update lost to the other writer
    assert [p.name for p in tmp_path.iterdir()] == [common.results_path("x", env, tmp_path).name]


def test_an_unreadable_day_file_is_moved_aside_not_overwritten(common, env, tmp_path):
    path = common.results_path("x", env, tmp_path)
    path.write_text('{"results": {"a": 1')  # cut off mid-write by an older writer
    assert common.read_day_json("x", env, tmp_path) == {}
    assert not path.exists() and path.with_name(path.name + ".unreadable").read_text() == '{"results": {"a": 1'


def test_each_round_is_reported_with_the_steps_timed_so_far(common):
    seen: list[dict[str, int]] = []
    out = common.time_interleaved({"a": lambda i: None, "b": lambda i: None}, torch.device("cpu"), warmup=1, iters=2, rounds=3,
                                  on_round=lambda t: seen.append({k: v.n for k, v in t.items()}))
    assert seen == [{"a": 2, "b": 2}, {"a": 4, "b": 4}, {"a": 6, "b": 6}]
    assert out["a"].n == 6 and len(out["a"].round_medians_ms) == 3


def test_qlora_weight_figures_are_written_before_any_timing(load_benchmark, monkeypatch, env, tmp_path):
    bench = load_benchmark("peft_speed")
    earlier = bench.common.results_path("peft-speed-qlora", env, tmp_path, suffix="-quick")
    earlier.write_text(json.dumps({"environment": env, "results": {"from-an-earlier-call": 1}}))

    def cut_off(*args, **kwargs):
        raise KeyboardInterrupt  # the call is killed when the timing starts

    monkeypatch.setattr(bench.common, "time_interleaved", cut_off)
    with pytest.raises(KeyboardInterrupt):
        bench.main(["--parts", "qlora", "--quick", "--device", "cpu", "--compile", "off", "--out-dir", str(tmp_path)])
    payload = json.loads(earlier.read_text())
    q = payload["results"]["qlora"]
    assert payload["results"]["from-an-earlier-call"] == 1
    assert set(q["weight_bytes"]) == {"bf16 lora", "qlora nf4", "qlora nf4+emb"}
    assert q["weight_ratio"] == q["weight_bytes"]["qlora nf4"] / q["weight_bytes"]["bf16 lora"]
    assert q["quantization_logit_change"] > 0 and q["quantization_logit_change_quantized_embeddings"] > 0
    assert set(q["modes"]) == {"bf16 lora", "qlora nf4", "qlora nf4+emb"}  # each mode's first step, untimed
    assert all("first_call_s" in m and "median_ms" not in m for m in q["modes"].values())


def test_fewshot_comparison_is_recomputed_over_what_is_finished(load_benchmark):
    bench = load_benchmark("fewshot")
    out = {"finetune": {"accuracy_mean": 50.0}, "pet": {"accuracy_mean": 61.0}}
    assert bench.compare(out, "sst2")["goal_met"] and out["pet_minus_finetune"] == 11.0
    del out["finetune"]
    assert "pet_minus_finetune" not in bench.compare(out, "sst2") and "goal_met" not in out


def test_exposure_bias_means_run_over_every_seed_in_the_file(load_benchmark):
    bench = load_benchmark("exposure_bias")
    row = lambda name, seed, b: {"recipe": name, "seed": seed, "bleu": b, "bleu_lc": b, "longest_third_bleu": b,  # noqa: E731
                                 "longest_third_bleu_lc": b}
    summary = bench.summarise([row("multi30k-de-en-scheduled", 1, 30.0), row("multi30k-de-en-scheduled", 0, 32.0)])
    assert summary[0]["seeds"] == [0, 1] and summary[0]["bleu"] == 31.0 and summary[0]["bleu_vs_teacher_forcing"] is None
    summary = bench.summarise([row("multi30k-de-en", 0, 30.0), row("multi30k-de-en-scheduled", 0, 32.0)])
    assert summary[1]["bleu_vs_teacher_forcing"] == 2.0


def test_exposure_bias_without_teacher_forcing_keeps_the_days_teacher_forced_rows(load_benchmark, tmp_path, monkeypatch):
    bench = load_benchmark("exposure_bias")
    made = []

    def one_run(name, seed, args, device, out):
        made.append((name, seed))
        b = 30.0 + len(made)
        return {"recipe": name, "seed": seed, "seconds": 1.0, "bleu": b, "bleu_lc": b, "longest_third_bleu": b, "longest_third_bleu_lc": b}

    monkeypatch.setattr(bench, "one_run", one_run)
    base = ["--data", "d", "--device", "cpu", "--out-dir", str(tmp_path), "--seeds", "1"]
    bench.main([*base, "--remedies", "scheduled"])
    bench.main([*base, "--remedies", "self-feed", "--no-teacher-forcing"])
    assert made == [("multi30k-de-en", 1), ("multi30k-de-en-scheduled", 1), ("multi30k-de-en-self-feed", 1)]
    (path,) = tmp_path.glob("exposure-bias-*.json")
    summary = {e["recipe"]: e for e in json.loads(path.read_text())["summary"]}
    assert summary["multi30k-de-en-self-feed"]["bleu_vs_teacher_forcing"] == 2.0  # 33 against the first call's 31


def test_pretraining_parts(load_benchmark):
    bench = load_benchmark("pretraining")
    assert bench.parse_parts("all") == list(bench.PARTS)
    assert bench.parse_parts("translation,throughput") == ["translation", "throughput"]
    with pytest.raises(Exception, match="unknown part"):
        bench.parse_parts("bleu")
