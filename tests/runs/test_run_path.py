"""The one run path: overrides applied together, resume from --out alone, a run's directory kept to itself."""

from __future__ import annotations

import json

import pytest

from attnkit.cli.main import main

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n\n" * 12
LM_TINY = ["--set", "model.n_layers=1", "--set", "model.n_heads=2", "--set", "model.d_model=16", "--set", "model.context=24",
           "--set", "train.batch_size=4", "--set", "train.eval.every=2", "--set", "train.device=cpu", "--sample-tokens", "0",
           "--set", "train.schedule.warmup=1"]
REV_TINY = ["--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.d_ff=32", "--set", "model.n_encoder_layers=1",
            "--set", "model.n_decoder_layers=1", "--set", "data.n_train=64", "--set", "data.n_valid=8", "--set", "train.batch_size=8",
            "--set", "train.eval.every=2", "--set", "train.device=cpu", "--set", "train.schedule.warmup=2"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def show(capsys, *argv) -> dict[str, str]:
    code, out, err = cli(capsys, *argv, "--show-config")
    assert code == 0, err
    return dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)


@pytest.mark.parametrize("pair", [("train.steps=30", "train.schedule.warmup=5"), ("model.d_model=90", "model.n_heads=6")])
def test_set_order_never_matters(capsys, tmp_path, pair):
    """A pair valid together but not one at a time (warm-up 5 < 30 steps < default warm-up; 90 = 6 x 15) passes in both orders."""
    base = ["train", "lm", "--text", tmp_path / "t.txt", "--out", tmp_path / "run"]
    a, b = pair
    one = show(capsys, *base, "--set", a, "--set", b)
    two = show(capsys, *base, "--set", b, "--set", a)
    assert one == two
    for assignment in pair:
        key, value = assignment.split("=")
        assert one[key].split("  ")[0] == value


def test_show_config_lists_allowed_values(capsys, tmp_path):
    shown = show(capsys, "train", "reverse", "--recipe", "demo", "--out", tmp_path)
    assert shown["train.optim.name"] == '"adam"  (adam | adamw)'
    assert shown["train.schedule.kind"].startswith('"cosine"  (noam | linear | cosine | constant)')
    assert shown["model.d_model"] == "64" and shown["data.n_test"] == "500"


def test_old_flat_key_names_the_new_one(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "reverse", "--out", tmp_path, "--set", "train.lr=1")
    assert code == 2 and "train.optim.lr" in err and err.count("\n") == 1


@pytest.mark.parametrize("task, extra", [("reverse", REV_TINY), ("lm", LM_TINY)])
def test_resume_needs_only_out(capsys, tmp_path, task, extra):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    data = ["--text", tmp_path / "t.txt"] if task == "lm" else []
    code, _, err = cli(capsys, "train", task, *data, "--out", out, "--no-progress", "--set", "train.steps=4", *extra)
    assert code == 0, err
    code, stdout, err = cli(capsys, "train", task, "--resume", "--out", out, "--no-progress", "--set", "train.steps=6")
    assert code == 0, err
    assert "resume: train.steps 4 -> 6" in stdout and "trained 6 steps" in stdout
    saved = json.loads((out / "run_config.json").read_text())
    assert saved["task"] == task and saved["train"]["steps"] == 6 and saved["model"]["d_model"] == 16
    # what the run learns is fixed: a changed model or optimizer setting is refused, naming the key
    for change in ("model.d_model=32", "train.optim.lr=0.01"):
        code, _, err = cli(capsys, "train", task, "--resume", "--out", out, "--set", change, "--set", "train.steps=8")
        assert code == 2 and change.split("=")[0] in err and "start a new run" in err and err.count("\n") == 1


def test_new_run_refuses_a_directory_holding_another(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli(capsys, "train", "reverse", "--out", out, "--no-progress", "--set", "train.steps=2", *REV_TINY)[0] == 0
    before = sorted(p.name for p in out.iterdir())
    code, _, err = cli(capsys, "train", "sort", "--out", out, "--no-progress", "--set", "train.steps=2", *REV_TINY)
    assert code == 2 and "holds another run" in err and "--resume" in err
    assert sorted(p.name for p in out.iterdir()) == before
    code, _, err = cli(capsys, "train", "sort", "--resume", "--out", out)
    assert code == 2 and "'reverse' run" in err


def test_resume_without_a_run(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "lm", "--resume", "--out", tmp_path / "nothing")
    assert code == 2 and "nothing to resume" in err and "Traceback" not in err


def test_recipe_of_another_task_is_refused(capsys, tmp_path):
    code, _, err = cli(capsys, "train", "lm", "--recipe", "demo", "--out", tmp_path)
    assert code == 2 and "trains the 'reverse' task" in err
    code, _, err = cli(capsys, "train", "lm", "--recipe", "no-such-recipe", "--out", tmp_path)
    assert code == 2 and "unknown recipe 'no-such-recipe'" in err


def test_config_file_and_set_apply_together(capsys, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"train": {"steps": 30, "schedule": {"warmup": 5}}, "model": {"n_heads": 6}}))
    shown = show(capsys, "train", "lm", "--out", tmp_path / "r", "--config", cfg, "--set", "model.d_model=90")
    assert shown["train.steps"] == "30" and shown["train.schedule.warmup"] == "5" and shown["model.d_model"] == "90"


@pytest.mark.parametrize("argv", [["train", "lm"], ["train", "translate"], ["train", "reverse"], ["demo"], ["recipes"]])
def test_help_is_plain_text(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":mod:" not in out and ":func:" not in out


def test_stages_follow_the_runs_device_and_feed_their_model(tmp_path, monkeypatch):
    """rte-minilm's stage gets the later run's train.device (and nothing else of its settings); its model feeds data.model."""
    import attnkit.runs.path as path
    from attnkit import recipes

    seen = {}

    def fake_run(job, cfgs, out, **kw):
        seen[kw["recipe"]] = cfgs
        (out / "eval.json").parent.mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(path, "run", fake_run)
    fed = path.run_stages(recipes.get("rte-minilm"), tmp_path, root=tmp_path,
                          assignments=["train.device=cpu", "train.optim.lr=0.5", "data.epochs=1"], log=lambda s: None)
    stage = seen["rte-tapt"]
    assert stage["train"].device == "cpu"
    assert stage["train"].optim.lr == recipes.get("rte-tapt").train.optim.lr  # the later run's lr is not the stage's
    assert fed == [f'data.model={json.dumps(str(tmp_path / "stages" / "rte-tapt" / "model"))}']
    seen.clear()
    path.run_stages(recipes.get("rte-minilm"), tmp_path / "longer", root=tmp_path, assignments=["train.device=cpu"],
                    stage_assignments=["train.steps=7"], log=lambda s: None)
    assert seen["rte-tapt"]["train"].steps == 7 != recipes.get("rte-tapt").train.steps  # stage_assignments: the stages only


def test_resume_before_the_first_checkpoint_starts_again(capsys, tmp_path):
    """A run killed after writing its settings but before its first checkpoint is resumed from step 0, same settings."""
    import shutil

    out = tmp_path / "run"
    assert cli(capsys, "train", "reverse", "--out", out, "--no-progress", "--set", "train.steps=2", *REV_TINY)[0] == 0
    shutil.rmtree(out / "checkpoints")
    shutil.rmtree(out / "model")
    code, stdout, err = cli(capsys, "train", "reverse", "--resume", "--out", out, "--no-progress")
    assert code == 0, err
    assert "holds no checkpoint yet" in stdout and "trained 2 steps" in stdout
    assert (out / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("task,missing", [("classify", ("peft", "model")), ("lm", ("peft",))])
def test_resume_of_a_run_saved_without_a_later_section_takes_its_defaults(tmp_path, task, missing):
    """A section whose defaults switch a feature off (``peft``; fine-tuning's ``model``) may be absent from an older
    run's settings: the run trained without the feature, so it resumes at the defaults; a core section may not be."""
    from attnkit.errors import CheckpointError
    from attnkit.runs import RUN_CONFIG, job, resolve_configs

    j = job(task)
    saved = {name: cfg.to_dict() for name, cfg in j.defaults().items() if name not in missing}
    (tmp_path / RUN_CONFIG).write_text(json.dumps({"task": task, **saved}))
    cfgs = resolve_configs(j, out=tmp_path, resume=True, log=lambda *_: None)
    assert {name: cfgs[name] for name in missing} == {name: j.defaults()[name] for name in missing}
    del saved["train"]
    (tmp_path / RUN_CONFIG).write_text(json.dumps({"task": task, **saved}))
    with pytest.raises(CheckpointError, match="has no 'train' config"):
        resolve_configs(j, out=tmp_path, resume=True, log=lambda *_: None)
