"""``attnkit train listops``: a tiny run writes eval.json and a loadable model; the quick recipe trains, saves, loads back,
predicts and resumes from ``--out`` alone; bad input is one line, exit 2."""

from __future__ import annotations

import json

import pytest
import torch

from attnkit.cli.main import main

DATA = ["--set", "data.train_size=64", "--set", "data.valid_size=16", "--set", "data.test_size=16",
        "--set", "data.min_len=10", "--set", "data.max_len=60", "--set", "data.pad_to=16", "--set", "data.workers=1"]
TINY = ["--preset", "listops-tiny", "--no-progress", *DATA,
        "--set", "train.schedule.warmup=1", "--set", "train.steps=4", "--set", "train.eval.every=2", "--set", "train.batch_size=8",
        "--set", "train.device=cpu"]


@pytest.mark.parametrize("kind, extra", [
    ("scaled_dot", []), ("sliding_window", []), ("linformer", []),
    ("sliding_window", ["--set", "model.mask_padding=false"]),  # reported to raise StopIteration (on a GPU)
])
def test_tiny_run_writes_eval_json_and_model(kind, extra, tmp_path, capsys):
    code = main(["train", "listops", "--attention", kind, "--out", str(tmp_path / "run"), *TINY, *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert 0.0 <= report["test_accuracy"] <= 1.0 and report["steps"] == 4 and report["task"] == "listops"
    assert [e["step"] for e in report["validation"]] == [2, 4]
    assert report["attention"]["kind"] == kind and "test accuracy" in out
    assert report["data"] == {"train": 64, "validation": 16, "test": 16}
    from attnkit.models import EncoderClassifier, load
    from attnkit.training.listops import ATTENTION_DEFAULTS

    model = load(tmp_path / "run" / "model")
    assert isinstance(model, EncoderClassifier) and model.config.attention.kind == kind
    for key, value in ATTENTION_DEFAULTS.get(kind, {}).items():  # the kernel got ListOps parameters
        assert model.config.attention.params[key] == value
    if kind == "linformer":
        assert model.config.attention.params["max_len"] == model.config.max_len
    assert list(tmp_path.joinpath("run").glob("listops-*.pt"))  # the data are cached beside the run


def test_attention_parameters_given_win_over_the_listops_values(tmp_path, capsys):
    code = main(["train", "listops", "--attention", "sliding_window", "--set", "model.attention.params.window=8",
                 "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache"), *TINY])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["model"]["attention"]["params"] == {"window": 8}
    assert list((tmp_path / "cache").glob("listops-*.pt")) and not list((tmp_path / "run").glob("listops-*.pt"))


def test_quick_recipe_trains_saves_loads_predicts_and_resumes(tmp_path, capsys):
    from attnkit.models import load
    from attnkit.training.listops import ListOpsDataConfig, collate, evaluate_split, make_splits

    run = tmp_path / "run"
    code = main(["train", "listops", "--recipe", "listops-small", "--quick", "--out", str(run), "--no-progress", "--set", "train.device=cpu"])
    out, err = capsys.readouterr()
    assert code == 0, err
    saved = json.loads((run / "run_config.json").read_text())
    assert saved["recipe"] == "listops-small" and saved["train"]["optim"]["lr"] == 1e-3 and saved["train"]["steps"] == 6
    assert saved["data"]["train_size"] == 200 and saved["model"]["d_model"] == 32
    report = json.loads((run / "eval.json").read_text())
    # predict: the saved model on the run's own test split, batch by batch, agrees with the score it reported
    d = {k: v for k, v in saved["data"].items() if k != "cache"}
    test = make_splits(ListOpsDataConfig(**d), cache_dir=run, log=lambda _: None)["test"]
    model = load(run / "model").eval()
    batch = collate(test, list(range(len(test))), pad_to=d["pad_to"])
    with torch.no_grad():
        logits = model(batch.ids, attention_mask=batch.attention_mask).logits
    assert logits.shape == (len(test), 10)
    accuracy = (logits.argmax(-1) == batch.labels).float().mean().item()
    assert accuracy == pytest.approx(report["test_accuracy"], abs=1e-6)
    assert evaluate_split(model, test, pad_to=d["pad_to"])["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    # resume from --out alone with more steps: the saved settings, noted change, one more evaluation
    code = main(["train", "listops", "--resume", "--out", str(run), "--set", "train.steps=9", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "resume: train.steps 6 -> 9" in out and "trained 9 steps" in out
    report = json.loads((run / "eval.json").read_text())
    assert report["steps"] == 9 and report["recipe"] == "listops-small" and [e["step"] for e in report["validation"]] == [9]
    # a changed model key is refused, naming it
    for argv, key in ((["--set", "model.d_model=64"], "model.d_model"), (["--attention", "linformer"], "model.attention.kind"),
                      (["--set", "data.train_size=300"], "data.train_size")):
        code = main(["train", "listops", "--resume", "--out", str(run), *argv, "--no-progress"])
        _, err = capsys.readouterr()
        assert code == 2 and err.startswith(f"attnkit: error: {key}=") and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("extra, words", [
    (["--attention", "nonsense"], "attention.kind"),
    (["--preset", "huge"], "unknown classifier preset"),
    (["--set", "model.max_len=32"], "model.max_len=32"),
    (["--attention", "sliding_window", "--set", "model.attention.params.window=-3"], "window"),
    (["--set", "data.min_len=1"], "min_len"),
    (["--attention", "global_window", "--set", "model.attention.params.global_positions=[0,40]"], "global_positions=[0, 40]"),
    (["--attention", "bigbird", "--set", "model.attention.params.block=0"], "block=0"),
    (["--set", "train.lr=1e-3"], "write train.optim.lr"),
])
def test_bad_input_is_one_line(extra, words, tmp_path, capsys):
    code = main(["train", "listops", "--out", str(tmp_path / "r"), *TINY, *extra])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("attnkit: error:") and len(err.strip().splitlines()) == 1 and words in err
    assert not list(tmp_path.glob("r/listops-*.pt"))  # refused before any data were generated


@pytest.mark.parametrize("extra, words", [([], "nothing to resume"), (["--preset", "listops-tiny"], "leave out --quick, --preset")])
def test_resume_errors_are_one_line(extra, words, tmp_path, capsys):
    code = main(["train", "listops", "--resume", "--out", str(tmp_path / "r"), "--no-progress", *extra])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("attnkit: error:") and len(err.strip().splitlines()) == 1 and words in err
