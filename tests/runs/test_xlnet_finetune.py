"""attnkit finetune classify|ner on an XLNet checkpoint from attnkit train xlnet: the head, learning, the saved model."""

from __future__ import annotations

import json
import random

import pytest
import torch

import attnkit
from attnkit.cli.main import main
from attnkit.models.xlnet_heads import XLNetClassifier, XLNetTagger
from tests.cli.test_cli_finetune import sentiment  # 'good' or 'bad' among filler words: the label

FAST = ["--no-progress", "--set", "train.device=cpu", "--set", "train.log_every=50"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny XLNet from attnkit train xlnet, its vocabulary built from the task's words."""
    root = tmp_path_factory.mktemp("xlnet")
    rng = random.Random(0)
    text = "".join(" ".join(s for s, _ in sentiment(rng, 6)) + "\n\n" for _ in range(40))
    (root / "t.txt").write_text(text)
    argv = ["train", "xlnet", "--text", str(root / "t.txt"), "--out", str(root / "run"), "--vocab-size", "80", "--max-seq-len", "32",
            "--set", "model.n_layers=2", "--set", "model.d_model=32", "--set", "model.n_heads=2", "--set", "train.steps=2",
            "--set", "train.batch_size=4", "--set", "train.eval.every=2", "--set", "train.schedule.warmup=1",
            "--set", "data.max_eval_pairs=4", "--set", "data.valid_fraction=0.1", *FAST]
    assert main(argv) == 0
    return root / "run" / "model"


def write_tsv(path, rows):
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return path


def test_classify_learns_and_the_saved_model_predicts(pretrained, tmp_path, capsys):
    rng = random.Random(1)
    train = write_tsv(tmp_path / "train.tsv", sentiment(rng, 160))
    dev = write_tsv(tmp_path / "dev.tsv", sentiment(rng, 60))
    out = tmp_path / "clf"
    code = main(["finetune", "classify", "--model", str(pretrained), "--train", str(train), "--dev", str(dev), "--out", str(out),
                 "--epochs", "6", "--set", "train.optim.lr=2e-3", "--set", "train.batch_size=16", "--set", "train.optim.layer_decay=0.9",
                 *FAST])
    assert code == 0
    best = json.loads((out / "eval.json").read_text())
    assert best["accuracy"] >= 0.9  # the label is one word; a chance model scores about 0.5
    model = attnkit.load(out / "model")
    assert isinstance(model, XLNetClassifier) and model.config.summary == "first" and model.config.labels == ("negative", "positive")
    source = attnkit.load(pretrained)
    assert model.config.encoder == source.config  # the encoder's sizes carried over
    capsys.readouterr()
    assert main(["eval", "classify", "--model", str(out / "model"), "--data", str(dev), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(best["accuracy"], abs=1e-6)  # eval.json's, recomputed
    rows = [line.split("\t") for line in dev.read_text().splitlines()[1:]]
    (tmp_path / "sentences.txt").write_text("".join(s + "\n" for s, _ in rows))
    capsys.readouterr()
    assert main(["predict", "--model", str(out / "model"), str(tmp_path / "sentences.txt"), "--device", "cpu"]) == 0
    pred = capsys.readouterr().out.splitlines()
    assert len(pred) == len(rows)
    assert sum(p == y for p, (_, y) in zip(pred, rows)) / len(rows) >= 0.9


def test_the_fresh_head_holds_the_checkpoint_weights(pretrained):
    from attnkit.training.finetune import build_head

    source = attnkit.load(pretrained)
    for kind, cls in (("classify", XLNetClassifier), ("ner", XLNetTagger)):
        head = build_head(source, kind, ["a", "b", "c"], classifier="mean" if kind == "classify" else "auto")
        assert isinstance(head, cls)
        for name, p in head.xlnet.state_dict().items():
            assert torch.equal(p, source.state_dict()[name]), name
    assert build_head(source, "classify", ["a", "b"], classifier="mean").config.summary == "mean"


@pytest.mark.parametrize("flags,words", [(["--features", "last4"], "data.features"), (["--peft", "lora"], "peft.method"),
                                         (["--set", "data.classifier=pooler"], "classifier='pooler'")])
def test_bert_only_options_are_refused_in_one_line(pretrained, tmp_path, capsys, flags, words):
    rng = random.Random(2)
    train = write_tsv(tmp_path / "train.tsv", sentiment(rng, 20))
    code = main(["finetune", "classify", "--model", str(pretrained), "--train", str(train), "--out", str(tmp_path / "o"), *flags, *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o" / "model").exists()


def test_ner_trains_a_tagger_that_eval_scores_alike(pretrained, tmp_path, capsys):
    from tests.cli.test_cli_finetune import tagged, write_conll

    rng = random.Random(3)
    train = write_conll(tmp_path / "train.conll", tagged(rng, 120))
    dev = write_conll(tmp_path / "dev.conll", tagged(rng, 40))
    out = tmp_path / "ner"
    assert main(["finetune", "ner", "--model", str(pretrained), "--train", str(train), "--dev", str(dev), "--out", str(out),
                 "--epochs", "4", "--set", "train.optim.lr=2e-3", "--set", "train.batch_size=16", *FAST]) == 0
    best = json.loads((out / "eval.json").read_text())
    assert isinstance(attnkit.load(out / "model"), XLNetTagger)
    capsys.readouterr()
    assert main(["eval", "ner", "--model", str(out / "model"), "--data", str(dev), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["f1"] == pytest.approx(best["f1"], abs=1e-6)
