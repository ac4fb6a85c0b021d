"""``train lm`` continuing a saved GPT with ``data.adjust``: a longer context and YaRN-scaled rotary positions, the same weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import attnkit
from attnkit.cli.main import main
from attnkit.data.tokenizer import load_tokenizer
from attnkit.models.gpt import GPT

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n\n" * 30
RUN = ["train", "lm", "--no-progress", "--sample-tokens", "0", "--set", "train.device=cpu", "--set", "train.batch_size=4",
       "--set", "train.eval.every=2", "--set", "train.log_every=2", "--set", "train.schedule.warmup=1", "--set", "train.steps=2"]
TINY = ["--set", "model.n_layers=1", "--set", "model.n_heads=2", "--set", "model.d_model=16", "--set", "model.context=16"]
YARN = ["--set", 'data.adjust=["context", "attention.position.scaling", "attention.position.factor", '
        '"attention.position.original_max_len"]', "--set", "model.context=64", "--set", "model.attention.position.scaling=yarn",
        "--set", "model.attention.position.factor=4", "--set", "model.attention.position.original_max_len=16"]


def window_loss(model: GPT, ids: torch.Tensor, length: int) -> float:
    """The reference: mean next-token cross-entropy over the non-overlapping windows of ``length + 1`` tokens."""
    n = (len(ids) - 1) // length
    windows = torch.stack([ids[i * length : i * length + length + 1] for i in range(n)])
    with torch.no_grad():
        logits = model.eval()(windows[:, :-1]).logits
    return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten()).item()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny rotary GPT trained at context 16 (long enough that its attention depends on positions)."""
    d = tmp_path_factory.mktemp("lm_adjust")
    (d / "t.txt").write_text(TEXT)
    assert main([*RUN, *TINY, "--set", "model.attention.position.kind=rotary",
                 "--set", "train.steps=60", "--set", "train.optim.lr=0.01", "--set", "train.eval.every=60",
                 "--text", str(d / "t.txt"), "--out", str(d / "base")]) == 0
    return d


def test_continued_model_takes_the_adjusted_context_and_scaling_with_its_weights(base: Path, tmp_path: Path) -> None:
    # the run's own model config differs from the source's architecture (d_model 768 by default): only the adjusted keys come from it
    assert main([*RUN, *YARN, "--model", str(base / "base" / "model"), "--text", str(base / "t.txt"), "--out", str(tmp_path / "yarn")]) == 0
    src = attnkit.load(base / "base" / "model")
    out = attnkit.load(tmp_path / "yarn" / "model")
    c = out.config
    pos = c.attention.position
    assert (c.context, pos.kind, pos.scaling, pos.factor, pos.original_max_len) == (64, "rotary", "yarn", 4.0, 16)
    assert dataclasses.replace(c, context=16, attention=src.config.attention) == src.config  # the rest is the source's
    assert json.loads((tmp_path / "yarn" / "run_config.json").read_text())["model"] == c.to_dict()

    # the loss before any step is the source's weights in a model built with the asked settings, over windows of 64
    tok = load_tokenizer(base / "base" / "model")
    ids = torch.tensor(tok.encode(TEXT).ids)
    valid = ids[int(0.9 * len(ids)):]
    pos = src.config.attention.position.replace(scaling="yarn", factor=4.0, original_max_len=16)
    reference = GPT(dataclasses.replace(src.config, context=64, attention=src.config.attention.replace(position=pos)))
    reference.load_state_dict(src.state_dict())
    expected = window_loss(reference, valid, 64)
    start = json.loads((tmp_path / "yarn" / "eval.json").read_text())["start_loss"]
    assert start == pytest.approx(expected, rel=1e-5)
    # and the scaling reached it: the unscaled source at 64 predicts otherwise
    unscaled = GPT(dataclasses.replace(src.config, context=64))
    unscaled.load_state_dict(src.state_dict())
    with torch.no_grad():
        gap = (unscaled.eval()(valid[None, :64]).logits - reference.eval()(valid[None, :64]).logits).abs().max().item()
    assert gap > 1e-2


def test_adjust_refuses_a_weight_changing_key(base: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main([*RUN, "--set", 'data.adjust=["d_model"]', "--model", str(base / "base" / "model"), "--text", str(base / "t.txt"),
                 "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "adjust" in err and "'d_model'" in err and "attention.position.factor" in err  # names the key and what is allowed


def test_adjust_refuses_learned_positions_a_new_context(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.txt").write_text(TEXT)
    assert main([*RUN, *TINY, "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "learned")]) == 0
    capsys.readouterr()
    code = main([*RUN, "--set", 'data.adjust=["context"]', "--set", "model.context=64", "--model", str(tmp_path / "learned" / "model"),
                 "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "learned positions" in err and "16 rows" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x" / "model").exists()


def test_adjust_needs_a_continued_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "t.txt").write_text(TEXT)
    code = main([*RUN, *TINY, "--set", 'data.adjust=["context"]', "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "data.model" in err and len(err.splitlines()) == 1
