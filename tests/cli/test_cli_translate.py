"""``attnkit train translate``, ``attnkit translate`` and ``attnkit eval translate`` end to end, and their errors."""

from __future__ import annotations

import io
import json
import sys

import pytest
import torch

import attnkit
from attnkit.cli.main import main
from attnkit.training.checkpoint import list_checkpoints

TINY = [
    "--preset", "transformer-tiny", "--vocab-size", "300", "--no-progress",
    "--set", "model.max_len=64", "--set", "train.steps=30", "--set", "train.schedule.warmup=10", "--set", "train.optim.lr=2",
    "--set", "train.eval.every=10", "--set", "train.save_every=10", "--set", "train.log_every=10",
    "--set", "train.device=cpu", "--set", "data.max_tokens=500", "--set", "data.bleu_sentences=5", "--set", "data.average_last=3",
]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(multi30k_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before conftest's per-test one-thread fixture
    try:
        code = main(["train", "translate", "--src", "de", "--tgt", "en", "--data", str(multi30k_sample), "--out", str(out), *TINY])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    return out


def test_train_writes_an_averaged_model(trained, multi30k_sample):
    model_dir = trained / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "translation.json"):
        assert (model_dir / name).is_file(), name
    assert json.loads((model_dir / "translation.json").read_text()) == {"src": "de", "tgt": "en", "beam_size": 4, "length_penalty": 0.6}
    run_config = json.loads((trained / "run_config.json").read_text())
    assert run_config["data"]["data"] == str(multi30k_sample) and run_config["model"]["src_vocab_size"] <= 300
    assert [p.name for p in list_checkpoints(trained)][-3:] == ["step-00000010", "step-00000020", "step-00000030"]
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/bleu" in r] == [10, 20, 30]
    # The saved model is the mean of the last three checkpoints, not the last one.
    from attnkit.training.averaging import average_checkpoints

    avg = average_checkpoints(list_checkpoints(trained)[-3:])
    state = attnkit.load(model_dir).state_dict()
    assert all((state[k] == v).all() for k, v in avg.items())


def test_translate_arguments_stdin_and_file(trained, capsys, monkeypatch, tmp_path):
    model = trained / "model"
    code, out, err = run_cli(capsys, "translate", "--model", model, "Ein Mann fährt Fahrrad.", "", "Zwei Hunde spielen.")
    assert code == 0, err
    lines = out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # three translations, the empty one empty

    monkeypatch.setattr(sys, "stdin", io.StringIO("Ein Mann fährt Fahrrad.\n\nZwei Hunde spielen.\n"))
    code, out_stdin, err = run_cli(capsys, "translate", "--model", model)
    assert code == 0, err
    assert out_stdin == out  # same sentences, same translations, batched differently

    src = tmp_path / "in.de"
    src.write_text("Ein Mann fährt Fahrrad.\n\nZwei Hunde spielen.\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "translate", "--model", model, "-i", src, "-o", tmp_path / "out.en", "--beam", "1")
    assert code == 0, err
    assert len((tmp_path / "out.en").read_text(encoding="utf-8").split("\n")) == 4


def test_translate_truncates_long_inputs_with_a_warning(trained, capsys, multi30k_sample):
    from attnkit.data.parallel import read_parallel

    long = " ".join(read_parallel(multi30k_sample, "val", "de", "en").src[:12])  # far beyond max_len=64 tokens
    code, out, err = run_cli(capsys, "translate", "--model", trained / "model", long, "Ein Hund.", long, "--beam", "2")
    assert code == 0, err
    assert out.count("\n") == 3
    assert "warning: 2 input(s) longer than 64 tokens were truncated" in err


def test_eval_prints_cased_and_lowercased_bleu(trained, capsys, multi30k_sample, tmp_path):
    code, out, err = run_cli(capsys, "eval", "translate", "--model", trained / "model", "--data", multi30k_sample, "--split", "test_2016_flickr")
    assert code == 0, err
    assert "test_2016_flickr de->en: 40 sentences, beam 4" in out
    assert "BLEU (cased)" in out and "case:mixed|eff:no|tok:13a" in out
    assert "BLEU (lowercased)" in out and "case:lc|eff:no|tok:13a" in out
    code, out, err = run_cli(
        capsys, "eval", "translate", "--model", trained / "model", "--data", multi30k_sample, "--split", "val", "--json",
        "--beam", "1", "--hypotheses", tmp_path / "hyp.en",
    )
    assert code == 0, err
    record = json.loads(out)
    assert record["sentences"] == 40 and record["beam_size"] == 1 and 0 <= record["bleu_lc"] <= 100
    assert len((tmp_path / "hyp.en").read_text(encoding="utf-8").splitlines()) == 40


def test_resume_continues_and_a_fresh_run_refuses_old_checkpoints(multi30k_sample, tmp_path, capsys):
    args = ["train", "translate", "--src", "de", "--tgt", "en", "--data", multi30k_sample, "--out", tmp_path, *TINY]
    short = [*args, "--set", "train.steps=10", "--set", "data.average_last=1"]
    assert run_cli(capsys, *short)[0] == 0
    code, _, err = run_cli(capsys, *short)
    assert code == 2 and "holds another run (run_config.json); continue it with --resume" in err
    code, out, err = run_cli(capsys, "train", "translate", "--out", tmp_path, "--resume", "--no-progress", "--set", "train.steps=20")
    assert code == 0, err
    assert "trained 20 steps" in out and "step-00000020" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--src", "fr", "--tgt", "en"], "the 'train' split exists for de, en only"),
        (["--src", "de", "--tgt", "en", "--set", "data.valid_split=dev"], "no 'dev' split); splits found: test_2016_flickr, train, val"),
        (["--src", "de", "--tgt", "de"], "both 'de'"),
        (["--tgt", "en"], "needs --src LANG"),
        (["--src", "de", "--tgt", "en", "--set", "train.keep_checkpoints=2"], "needs train.keep_checkpoints >= 3"),
        (["--src", "de", "--tgt", "en", "--set", "train.save_every=0"], "data.average_last=3 needs train.save_every > 0"),
        (["--src", "de", "--tgt", "en", "--set", "data.max_tokens=0"], "max_tokens=0 is not allowed"),
        (["--src", "de", "--tgt", "en", "--preset", "transformer-huge"], "unknown Transformer preset 'transformer-huge'"),
    ],
)
def test_train_errors(multi30k_sample, tmp_path, capsys, extra, message):
    code, _, err = run_cli(capsys, "train", "translate", "--data", multi30k_sample, "--out", tmp_path, *TINY, *extra)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_train_errors_without_data(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "translate", "--src", "de", "--tgt", "en", "--out", tmp_path)
    assert code == 2 and "needs --data DIR" in err
    code, _, err = run_cli(capsys, "train", "translate", "--src", "de", "--tgt", "en", "--data", tmp_path / "none", "--out", tmp_path)
    assert code == 2 and "none does not exist" in err
    with pytest.raises(SystemExit) as e:  # translation options exist only on `train translate`
        run_cli(capsys, "train", "reverse", "--src", "de", "--out", tmp_path)
    assert e.value.code == 2 and "unrecognized arguments: --src de" in capsys.readouterr().err


def test_translate_errors(trained, tmp_path, capsys, monkeypatch):
    bare = tmp_path / "bare"
    attnkit.load(trained / "model").save_pretrained(bare)  # weights without a tokenizer
    code, _, err = run_cli(capsys, "translate", "--model", bare, "Hallo")
    assert code == 2 and "has no tokenizer" in err
    code, _, err = run_cli(capsys, "translate", "--model", tmp_path / "missing", "Hallo")
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(capsys, "translate", "--model", trained / "model", "--input", tmp_path / "no.txt")
    assert code == 2 and "no.txt does not exist" in err
    code, _, err = run_cli(capsys, "translate", "--model", trained / "model", "--beam", "0", "Hallo")
    assert code == 2 and "--beam 0 must be at least 1" in err
    code, _, err = run_cli(capsys, "eval", "translate", "--model", bare, "--data", tmp_path)
    assert code == 2 and "has no tokenizer" in err


def test_eval_without_sacrebleu_says_how_to_install(trained, multi30k_sample, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)
    monkeypatch.setitem(sys.modules, "sacrebleu.metrics", None)
    code, _, err = run_cli(capsys, "eval", "translate", "--model", trained / "model", "--data", multi30k_sample)
    assert code == 2 and "pip install 'attnkit[eval]'" in err


@pytest.mark.parametrize("cmd", [["translate"], ["eval"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: attnkit" in capsys.readouterr().out
