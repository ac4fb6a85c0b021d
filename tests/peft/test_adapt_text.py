"""A character-level GPT continued on a new text: gzipped text, characters the model never saw, the loss before adapting."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import attnkit
from attnkit.cli.main import main
from attnkit.data.text import encode, read_text
from attnkit.data.tokenizer import char_tokenizer, load_tokenizer
from attnkit.errors import DataError

LM = ["train", "lm", "--no-progress", "--set", "train.device=cpu", "--set", "train.batch_size=4", "--set", "train.log_every=2",
      "--set", "train.eval.every=2", "--set", "train.schedule.warmup=0", "--sample-tokens", "0", "--set", "train.steps=2"]


def test_unseen_characters_are_named_or_read_as_unk() -> None:
    tok = char_tokenizer("ab ")
    with pytest.raises(DataError, match=r"2 character\(s\).*'4', 'x'.*data\.unknown=unk"):
        encode(tok, "ab x4 a")
    # the tokenizer's own WordLevel model maps what it lacks to <unk>: the reference for unknown="unk"
    assert encode(tok, "ab x4 a", unknown="unk") == tok.encode("ab x4 a").ids
    assert encode(tok, "ab x4 a", unknown="unk").count(tok.token_to_id("<unk>")) == 2


def test_gzipped_text_reads_as_the_plain_file(tmp_path: Path) -> None:
    text = "first line\nsecond, with é\n\nlast\n"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "t.txt.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    assert read_text(tmp_path / "t.txt.gz") == read_text(tmp_path / "t.txt") == text


def test_continued_gpt_on_unseen_characters_reports_the_loss_before(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "base.txt").write_text("to be or not to be, that is the question.\n" * 40)
    other = "the 2 dogs ran to 4 boats, not to the sea.\n" * 40  # '2', '4', 'g', 'd', ... are not in the base's text
    with gzip.open(tmp_path / "other.txt.gz", "wt", encoding="utf-8") as f:
        f.write(other)
    tiny = ["--set", "model.n_layers=1", "--set", "model.d_model=32", "--set", "model.n_heads=2", "--set", "model.context=32"]
    assert main([*LM, *tiny, "--text", str(tmp_path / "base.txt"), "--out", str(tmp_path / "base")]) == 0
    capsys.readouterr()
    adapt = [*LM, "--model", str(tmp_path / "base" / "model"), "--text", str(tmp_path / "other.txt.gz")]

    assert main([*adapt, "--peft", "lora", "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'2'" in err and "data.unknown=unk" in err

    assert main([*adapt, "--peft", "lora", "--set", "data.unknown=unk", "--out", str(tmp_path / "lora")]) == 0
    capsys.readouterr()
    report = json.loads((tmp_path / "lora" / "eval.json").read_text())
    # the reference: the base's mean next-token cross-entropy over the non-overlapping windows of the last 10%
    base = attnkit.load(tmp_path / "base" / "model").eval()
    tok = load_tokenizer(tmp_path / "base" / "model")
    unk = tok.token_to_id("<unk>")
    ids = torch.tensor([tok.token_to_id(ch) if tok.token_to_id(ch) is not None else unk for ch in other])
    valid = ids[int(0.9 * len(ids)):]
    n = (len(valid) - 1) // 32
    windows = torch.stack([valid[i * 32 : i * 32 + 33] for i in range(n)])
    with torch.no_grad():
        logits = base(windows[:, :-1]).logits
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)).item()
    assert report["start_loss"] == pytest.approx(expected, rel=1e-5)
    assert json.loads((tmp_path / "lora" / "start_eval.json").read_text())["loss"] == pytest.approx(expected, rel=1e-5)
    assert 0 < report["trainable_percent"] < 100


def test_every_method_has_an_sst2_and_an_rte_recipe() -> None:
    from attnkit import recipes
    from attnkit.peft.method import METHODS

    for task in ("sst2", "rte"):
        for method in (*METHODS[1:], "dora"):
            r = recipes.get(f"{task}-minilm-{method}", "classify")
            assert r.peft is not None and r.peft.method == ("lora" if method == "dora" else method) and r.peft.dora == (method == "dora")
            assert r.quick and r.data.model == "all-MiniLM-L6-v2"
    # soft prompts step far further than weight adapters (Lester et al. 2021; Liu et al. 2022)
    lr = {m: recipes.get(f"sst2-minilm-{m}").train.optim.lr for m in ("lora", "prompt", "ptuning-v2")}
    assert lr["prompt"] > lr["ptuning-v2"] > lr["lora"]
