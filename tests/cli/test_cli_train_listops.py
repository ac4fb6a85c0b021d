"""``attnkit train listops``: a tiny run writes eval.json and a loadable model; bad input is one line, exit 2."""

from __future__ import annotations

import json

import pytest

from attnkit.cli.main import main

TINY = ["--preset", "listops-tiny", "--no-progress",
        "--set", "data.train_size=64", "--set", "data.valid_size=16", "--set", "data.test_size=16",
        "--set", "data.min_len=10", "--set", "data.max_len=60", "--set", "data.pad_to=16", "--set", "data.workers=1",
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
    assert 0.0 <= report["test"]["accuracy"] <= 1.0 and report["steps"] == 4
    assert [e["step"] for e in report["validation"]] == [2, 4]
    assert report["attention"]["kind"] == kind and "test accuracy" in out
    from attnkit.models import EncoderClassifier, load

    model = load(tmp_path / "run" / "model")
    assert isinstance(model, EncoderClassifier) and model.config.attention.kind == kind
    assert list(tmp_path.joinpath("run").glob("listops-*.pt"))  # the data are cached beside the run


@pytest.mark.parametrize("extra, words", [
    (["--attention", "nonsense"], "attention.kind"),
    (["--preset", "huge"], "unknown classifier preset"),
    (["--set", "model.max_len=32"], "model.max_len=32"),
    (["--attention", "sliding_window", "--set", "model.attention.params.window=-3"], "window"),
    (["--set", "data.min_len=1"], "min_len"),
    (["--attention", "global_window", "--set", "model.attention.params.global_positions=[0,40]"], "global_positions=[0, 40]"),
    (["--attention", "bigbird", "--set", "model.attention.params.block=0"], "block=0"),
    (["--resume"], "nothing to resume"),
])
def test_bad_input_is_one_line(extra, words, tmp_path, capsys):
    code = main(["train", "listops", "--out", str(tmp_path / "r"), *TINY, *extra])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("attnkit: error:") and len(err.strip().splitlines()) == 1 and words in err
    assert not list(tmp_path.glob("r/listops-*.pt"))  # refused before any data were generated
