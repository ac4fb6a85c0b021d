"""The command line: help everywhere, one-line errors for user mistakes, info and train."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import attnkit
from attnkit.cli.main import main
from attnkit.summary import parameter_breakdown


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("cmd", [[], ["demo"], ["train"], ["info"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: attnkit" in capsys.readouterr().out


def _tiny_checkpoint(path, **kw):
    cfg = attnkit.preset("transformer-tiny", **kw)
    model = attnkit.Transformer(cfg)
    model.save_pretrained(path)
    return model


def test_info_counts_parameters(tmp_path, capsys):
    _tiny_checkpoint(tmp_path / "m")
    code, out, err = run_cli(capsys, "info", str(tmp_path / "m"))
    assert code == 0, err
    n = sum(p.numel() for p in attnkit.load(tmp_path / "m").parameters())
    assert f"parameters: {n:,}" in out
    assert "attention" in out and "feed_forward" in out


def test_bert_shaped_encoder_matrix_count():
    """Encoder-only stack with d_ff = 4H: matrix weights = V*H + L*12*H^2 (Devlin et al. 2019 count)."""
    V, H, L = 1000, 64, 3
    cfg = attnkit.TransformerConfig(src_vocab_size=V, tgt_vocab_size=V, d_model=H, n_heads=4, d_ff=4 * H, n_encoder_layers=L, n_decoder_layers=0)
    bd = parameter_breakdown(attnkit.Transformer(cfg))
    assert bd["all"]["matrices"] == V * H + L * 12 * H * H
    assert bd["attention"]["matrices"] == L * 4 * H * H
    assert bd["feed_forward"]["matrices"] == L * 8 * H * H
    assert bd["embeddings"]["matrices"] == V * H  # tied output head counted once


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["info", "{tmp}/missing"], "does not exist"),
        (["info", "{tmp}/empty"], "no config.json"),
        (["info", "{tmp}/truncated"], "truncated or corrupt"),
        (["info", "{tmp}/badkey"], "unknown config key 'd_modle'"),
        (["train", "reverse", "--set", "d_modle=3", "--out", "{tmp}/r"], "unknown config key 'd_modle'"),
        (["train", "reverse", "--set", "dropout=abc", "--out", "{tmp}/r"], "dropout='abc'"),
        (["train", "reverse", "--set", "train.steps=0", "--out", "{tmp}/r"], "steps=0"),
        (["train", "reverse", "--set", "norm_position=middle", "--out", "{tmp}/r"], "norm_position='middle'"),
        (["train", "reverse", "--set", "noequals", "--out", "{tmp}/r"], "key=value"),
        (["train", "reverse", "--resume", "--out", "{tmp}/nothing"], "nothing to resume"),
        (["train", "reverse", "--config", "{tmp}/nope.json", "--out", "{tmp}/r"], "does not exist"),
        (["demo", "--steps", "0", "--out", "{tmp}/d"], "--steps=0"),
    ],
)
def test_user_mistakes_give_one_line(argv, needle, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    model = _tiny_checkpoint(tmp_path / "truncated")
    w = tmp_path / "truncated" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    model.save_pretrained(tmp_path / "badkey")
    cfg = json.loads((tmp_path / "badkey" / "config.json").read_text())
    cfg["d_modle"] = 3
    (tmp_path / "badkey" / "config.json").write_text(json.dumps(cfg))
    code, out, err = run_cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("attnkit: error:"), err
    assert needle in lines[0]


def test_subprocess_error_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "attnkit.cli.main", "info", str(tmp_path / "nope")], capture_output=True, text=True)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr and p.stderr.count("\n") == 1


def test_train_resume_and_info(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "copy", "--out", str(out), "--no-progress", "--set", "d_model=32", "--set", "d_ff=64",
            "--set", "train.steps=6", "--set", "train.eval.every=3", "--set", "train.save_every=3", "--set", "train.schedule.warmup=2",
            "--set", "data.n_train=64", "--set", "data.n_valid=8", "--set", "train.batch_size=16"]
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "trained 6 steps" in stdout
    # continue to 9 steps
    args[args.index("train.steps=6")] = "train.steps=9"
    code, stdout, err = run_cli(capsys, *args, "--resume")
    assert code == 0, err
    assert "trained 9 steps" in stdout
    code, stdout, err = run_cli(capsys, "info", str(out / "model"))
    assert code == 0 and "tokenizer: tokenizer.json" in stdout
    torch.testing.assert_close(attnkit.load(out / "model").config.d_model, 32)


@pytest.mark.slow
def test_demo_reaches_its_target(tmp_path, capsys):
    """The main job as a user runs it: >= 0.98 held-out exact match, printed last with three decimals; model and tokenizer saved."""
    code, out, err = run_cli(capsys, "demo", "--out", str(tmp_path / "d"), "--no-progress")
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("held-out exact match: ") and len(last.split(": ")[1]) == 5
    exact = float(last.split(": ")[1])
    assert exact >= 0.98
    assert (tmp_path / "d" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "d" / "model" / "tokenizer.json").is_file()
    model = attnkit.load(tmp_path / "d" / "model")
    assert model.config.d_model == 64


def test_demo_twice_keeps_the_first_run(tmp_path, capsys, monkeypatch):
    """The install line run again: the second demo goes to attnkit-demo-2; an explicit --out holding a run is refused."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "demo", "--steps", "2", "--no-progress")[0] == 0
    first = (tmp_path / "attnkit-demo" / "run_config.json").read_text()
    code, out, _ = run_cli(capsys, "demo", "--steps", "2", "--no-progress")
    assert code == 0 and "attnkit-demo-2" in out
    assert (tmp_path / "attnkit-demo" / "run_config.json").read_text() == first
    code, _, err = run_cli(capsys, "demo", "--steps", "2", "--out", "attnkit-demo")
    assert code == 2 and "holds an earlier run" in err
