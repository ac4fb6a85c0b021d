"""benchmarks/fewshot.py turns the TASK-pet recipes into each method by assignments the run path accepts."""

from __future__ import annotations

import pytest

from attnkit import recipes
from attnkit.runs import job
from attnkit.runs.path import resolve_configs


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("fewshot")


@pytest.mark.parametrize("task", ["sst2", "rte"])
def test_each_method_is_the_recipe_with_its_assignments(bench, task):
    recipe = recipes.get(f"{task}-pet", "fewshot")
    got = {}
    for method in ("finetune", "pet", "pet-lm", "ptuning", "autoprompt"):
        cfgs = resolve_configs(job("fewshot"), recipe=recipe, assignments=bench.method_assignments(method), log=lambda s: None)
        got[method] = cfgs
    assert got["finetune"]["data"].method == "finetune" and got["finetune"]["peft"].method == "none"
    assert got["pet"]["data"].method == "pet" and got["pet"]["data"].distill and got["pet"]["data"].patterns == recipe.data.patterns
    p = got["ptuning"]
    assert (p["peft"].method, p["peft"].n_virtual, p["data"].distill, p["train"].optim.lr) == ("ptuning", 20, False, bench.PTUNING_LR)
    assert got["autoprompt"]["data"].patterns == ("auto",) and not got["autoprompt"]["data"].distill
    assert got["pet-lm"]["data"].lm_alpha == 1e-4 and got["pet"]["data"].lm_alpha == 0.0  # PET, section 3.1
    assert got["pet-lm"]["data"].replace(lm_alpha=0.0) == got["pet"]["data"]
    for cfgs in got.values():  # the protocol is the same for every method
        assert (cfgs["data"].shots, cfgs["data"].seeds, cfgs["train"].steps) == (16, 5, 1000)


def test_each_task_keeps_its_own_settings_across_calls(bench, monkeypatch, tmp_path):
    """Calls with other shots write their tasks with their own settings; a task's methods merge only with an
    earlier call's of the same settings; a file with one set of settings at the top gives it to each task."""
    import json

    def fake_run(task, methods, data, work, device, quick, shots, seeds, log, out, save, **kw):
        for m in methods:
            out[m] = {"accuracy_mean": float(shots), "accuracy_std": 0.0}
            bench.compare(out, task)  # as run_task does after each method
            save()
        return out

    monkeypatch.setattr(bench, "run_task", fake_run)
    base = ["--data", str(tmp_path), "--device", "cpu", "--out-dir", str(tmp_path)]
    bench.main([*base, "--tasks", "sst2", "--methods", "finetune"])
    (path,) = tmp_path.glob("fewshot-*.json")
    legacy = json.loads(path.read_text())  # the older layout: one set of settings for the file
    legacy["results"]["sst2"].pop("settings")
    legacy.update(quick=False, shots=16, seeds=5, command="python benchmarks/fewshot.py")
    path.write_text(json.dumps(legacy))
    bench.main([*base, "--tasks", "rte", "--methods", "finetune", "--shots", "8"])
    bench.main([*base, "--tasks", "sst2", "--methods", "pet"])  # 16 shots: merges with the first call's
    got = json.loads(path.read_text())
    assert "shots" not in got and "command" not in got
    sst2, rte = got["results"]["sst2"], got["results"]["rte"]
    assert sst2["settings"] == {"quick": False, "shots": 16, "seeds": 5} and set(sst2) >= {"finetune", "pet"}
    assert rte["settings"]["shots"] == 8 and rte["finetune"]["accuracy_mean"] == 8.0
    assert sst2["pet_minus_finetune"] == 0.0
    bench.main([*base, "--tasks", "sst2", "--methods", "pet", "--shots", "4"])  # other settings: sst2 starts over
    sst2 = json.loads(path.read_text())["results"]["sst2"]
    assert sst2["settings"]["shots"] == 4 and "finetune" not in sst2


def test_concurrent_calls_on_one_task_keep_each_others_methods(bench, monkeypatch, tmp_path):
    """Two calls on one task with the same settings, interleaved as concurrent calls are: each writes only what it ran,
    so the second's last write does not drop the method the first wrote in between."""
    import json

    base = ["--data", str(tmp_path), "--device", "cpu", "--out-dir", str(tmp_path), "--tasks", "sst2"]

    def inner_run(task, methods, data, work, device, quick, shots, seeds, log, out, save, **kw):
        out[methods[0]] = {"accuracy_mean": 70.0, "accuracy_std": 0.0}
        bench.compare(out, task)
        save()
        return out

    def outer_run(task, methods, data, work, device, quick, shots, seeds, log, out, save, **kw):
        out.update(adaptation_s=1.0)
        save()  # written before the other call finishes
        monkeypatch.setattr(bench, "run_task", inner_run)
        bench.main([*base, "--methods", "finetune"])  # the other call runs and writes meanwhile
        out["pet"] = {"accuracy_mean": 75.0, "accuracy_std": 0.0}
        bench.compare(out, task)
        save()
        return out

    monkeypatch.setattr(bench, "run_task", outer_run)
    bench.main([*base, "--methods", "pet"])
    (path,) = tmp_path.glob("fewshot-*.json")
    sst2 = json.loads(path.read_text())["results"]["sst2"]
    assert sst2["finetune"]["accuracy_mean"] == 70.0 and sst2["pet"]["accuracy_mean"] == 75.0
    assert sst2["pet_minus_finetune"] == 5.0


def test_adaptation_assignments_reach_the_stage_and_keep_a_file_of_their_own(bench, monkeypatch, tmp_path):
    """--tapt-set goes to the adaptation stage only (run_stages' stage_assignments), is recorded in the task's settings,
    and its rows go to a ``-tapt-...`` file, so the default call's file of the day keeps its rows; a malformed one is refused."""
    import json

    from attnkit.runs import path

    seen: list[tuple[str, list, list]] = []

    def fake_stages(recipe, out, *, stage_assignments=(), assignments=(), **kw):
        seen.append((recipe.name, list(stage_assignments), list(assignments)))
        return ['data.model="m"']

    class Report:
        final = {"accuracy_mean": 0.5, "accuracy_std": 0.0}

    def fake_run(job, cfgs, out, **kw):
        out.mkdir(parents=True, exist_ok=True)
        (out / "seeds.json").write_text(json.dumps([{"accuracy": 0.5}]))
        return Report()

    monkeypatch.setattr(path, "run_stages", fake_stages)
    monkeypatch.setattr(path, "run", fake_run)
    monkeypatch.setattr(path, "resolve_configs", lambda *a, **kw: {"train": type("T", (), {"optim": type("O", (), {"lr": 1e-5}), "steps": 1})})
    base = ["--data", str(tmp_path), "--device", "cpu", "--out-dir", str(tmp_path), "--tasks", "sst2", "--methods", "finetune"]
    bench.main(base)
    bench.main([*base, "--tapt-set", "train.steps=4000"])
    assert seen == [("sst2-pet", [], seen[0][2]), ("sst2-pet", ["train.steps=4000"], seen[0][2])]
    assert not any("train.steps" in a for a in seen[0][2])  # the later runs' assignments do not carry it
    default = json.loads(next(p for p in tmp_path.glob("fewshot-*.json") if "-tapt-" not in p.name).read_text())
    tapt = json.loads(next(tmp_path.glob("fewshot-*-tapt-train.steps-4000.json")).read_text())
    assert "tapt_set" not in default["results"]["sst2"]["settings"] and "finetune" in default["results"]["sst2"]
    assert tapt["results"]["sst2"]["settings"]["tapt_set"] == ["train.steps=4000"]
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        bench.main([*base, "--tapt-set", "train.steps"])


def test_the_goal_is_checked_on_the_better_pet_method(bench):
    out = {"finetune": {"accuracy_mean": 60.0}, "pet": {"accuracy_mean": 65.0}, "pet-lm": {"accuracy_mean": 71.0}}
    bench.compare(out, "sst2")
    assert (out["pet_minus_finetune"], out["pet-lm_minus_finetune"], out["goal_met"]) == (5.0, 11.0, True)
    del out["pet-lm"]
    bench.compare(out, "sst2")
    assert "pet-lm_minus_finetune" not in out and out["goal_met"] is False
