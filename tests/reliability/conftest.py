"""Small finished runs shared by the bad-input tests (each built once per session, then copied)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attnkit.cli.main import main

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n\n" * 40


@pytest.fixture(scope="session")
def runs_root(tmp_path_factory) -> Path:
    """``rev/``: a tiny finished ``train reverse`` run; ``lm/``: a tiny char ``train lm`` run; ``text.txt``: its text."""
    root = tmp_path_factory.mktemp("reliability-runs")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    rev = ["train", "reverse", "--out", str(root / "rev"), "--no-progress", "--set", "data.n_train=64", "--set", "data.n_valid=8",
           "--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.d_ff=32", "--set", "model.n_encoder_layers=1",
           "--set", "model.n_decoder_layers=1", "--set", "train.steps=4", "--set", "train.save_every=2", "--set", "train.eval.every=2",
           "--set", "train.batch_size=8", "--set", "train.schedule.warmup=2", "--set", "train.device=cpu"]
    lm = ["train", "lm", "--text", str(root / "text.txt"), "--out", str(root / "lm"), "--no-progress", "--sample-tokens", "0",
          "--set", "model.n_layers=1", "--set", "model.n_heads=2", "--set", "model.d_model=16", "--set", "model.context=24",
          "--set", "train.steps=4", "--set", "train.eval.every=2", "--set", "train.batch_size=4", "--set", "train.schedule.warmup=1",
          "--set", "train.device=cpu"]
    assert main(rev) == 0 and main(lm) == 0
    return root


@pytest.fixture
def work(tmp_path, runs_root) -> Path:
    """A fresh folder holding copies of ``rev/``, ``lm/`` and ``text.txt`` (tests may damage the copies)."""
    for name in ("rev", "lm"):
        shutil.copytree(runs_root / name, tmp_path / name)
    shutil.copy(runs_root / "text.txt", tmp_path / "text.txt")
    return tmp_path


@pytest.fixture(scope="session")
def bert_root(tmp_path_factory) -> Path:
    """``bert/``: a random bert-test encoder; ``clf/``: a two-label classifier (neg, pos); ``tag/``: a tagger (O, B-X, I-X);
    each with the same WordPiece tokenizer."""
    import torch

    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.models.bert import BertModel, bert_preset
    from attnkit.models.bert_heads import BertClassifier, BertTagger, BertTaskConfig

    root = tmp_path_factory.mktemp("reliability-bert")
    (root / "words.txt").write_text("the cat sat on a mat and the dog ran far away good bad movie film great awful\n" * 5)
    tok = WordPieceTokenizer.train([root / "words.txt"], vocab_size=60)
    torch.manual_seed(0)
    enc = bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=32)
    BertModel(enc).save_pretrained(root / "bert", tokenizer=tok)
    BertClassifier(BertTaskConfig(encoder=enc, num_labels=2, labels=("neg", "pos"))).save_pretrained(root / "clf", tokenizer=tok)
    BertTagger(BertTaskConfig(encoder=enc, num_labels=3, labels=("O", "B-X", "I-X"))).save_pretrained(root / "tag", tokenizer=tok)
    return root


@pytest.fixture
def bwork(work, bert_root) -> Path:
    """``work`` plus copies of ``bert/``, ``clf/`` and ``tag/``."""
    for name in ("bert", "clf", "tag"):
        shutil.copytree(bert_root / name, work / name)
    return work
