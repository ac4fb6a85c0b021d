"""``attnkit average`` (checkpoint averaging, uniform model soups) and ``train.init_seed``."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from test_cli_finetune import FAST, root, run_cli  # noqa: F401  (root: the module's data and tiny BERT)

import attnkit
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.models.bert_heads import BertClassifier, BertTaskConfig


def finetune(capsys, root: Path, out: Path, *sets: str) -> Path:
    code, _, err = run_cli(capsys, "finetune", "classify", "--model", root / "tiny", "--train", root / "train.tsv",
                           "--dev", root / "dev.tsv", "--out", out, *FAST, "--set", "train.batch_size=16", "--set", "train.optim.lr=1e-3",
                           "--epochs", "2", *[x for s in sets for x in ("--set", s)])
    assert code == 0, err
    return out / "model"


def test_soup_is_the_mean_of_the_ingredients(root, capsys, tmp_path):  # noqa: F811
    ingredients = [finetune(capsys, root, tmp_path / f"s{seed}", f"train.seed={seed}") for seed in (0, 1, 2)]
    (ingredients[-1] / "notes.txt").write_text("side file\n")
    code, stdout, err = run_cli(capsys, "average", *ingredients, "--out", tmp_path / "soup")
    assert code == 0, err
    assert "averaged 3 models" in stdout
    states = [load_file(str(p / "model.safetensors")) for p in ingredients]
    soup = load_file(str(tmp_path / "soup" / "model.safetensors"))
    assert set(soup) == set(states[0])
    for k, v in soup.items():
        torch.testing.assert_close(v, sum(s[k].double() for s in states).div(3).to(v.dtype), rtol=0, atol=1e-7)
    assert not torch.equal(states[0]["out.weight"], states[1]["out.weight"])  # the seeds did differ
    model = attnkit.load(tmp_path / "soup")
    assert isinstance(model, BertClassifier) and model.config.labels == ("negative", "positive")
    assert (tmp_path / "soup" / "notes.txt").read_text() == "side file\n"
    assert not list(tmp_path.glob("*.tmp-average"))
    (tmp_path / "in.txt").write_text("the movie was very good\n")
    code, stdout, err = run_cli(capsys, "predict", "--model", tmp_path / "soup", tmp_path / "in.txt", "--device", "cpu")
    assert code == 0 and stdout.split()[0] in ("negative", "positive"), err


def test_init_seed_fixes_the_fresh_head(root, capsys, tmp_path):  # noqa: F811
    """lr ~0: the saved head is its initial weights; train.seed must not change them, train.init_seed must."""
    frozen = ("train.steps=1", "train.optim.lr=1e-30", "train.eval.every=1")
    heads = {name: load_file(str(finetune(capsys, root, tmp_path / name, *frozen, *sets) / "model.safetensors"))["out.weight"]
             for name, sets in (("a", ("train.seed=0",)), ("b", ("train.seed=5",)), ("c", ("train.seed=0", "train.init_seed=7")))}
    torch.testing.assert_close(heads["a"], heads["b"], rtol=0, atol=1e-12)
    assert (heads["a"] - heads["c"]).abs().max() > 1e-3


def test_average_errors_are_one_line(root, capsys, tmp_path):  # noqa: F811
    encoder = attnkit.load(root / "tiny").config
    tok = WordPieceTokenizer.from_file(root / "tiny")
    for name, labels in (("ab", ("a", "b")), ("ba", ("b", "a")), ("ab2", ("a", "b"))):
        BertClassifier(BertTaskConfig(encoder=encoder, num_labels=2, labels=labels)).save_pretrained(tmp_path / name, tokenizer=tok)
    cases = [
        ((tmp_path / "ab", tmp_path / "ba"), "differ in labels"),
        ((tmp_path / "ab",), "at least two"),
        ((tmp_path / "ab", tmp_path / "ab"), "given twice"),
        ((tmp_path / "ab", tmp_path / "missing"), "is not a directory"),
        ((tmp_path / "ab", root / "tiny"), "differ in"),  # a bare encoder and a classifier
    ]
    for models, message in cases:
        code, _, err = run_cli(capsys, "average", *models, "--out", tmp_path / "o")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (models, err)
    code, _, err = run_cli(capsys, "average", tmp_path / "ab", tmp_path / "ab2", "--out", tmp_path / "ba")
    assert code == 2 and "already exists" in err
    (tmp_path / "ab2" / "config.json").write_text("{not json")
    code, _, err = run_cli(capsys, "average", tmp_path / "ab", tmp_path / "ab2", "--out", tmp_path / "o")
    assert code == 2 and "not readable JSON" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_dropout_rates_may_differ(root, capsys, tmp_path):  # noqa: F811
    encoder = attnkit.load(root / "tiny").config
    tok = WordPieceTokenizer.from_file(root / "tiny")
    for name, drop in (("d1", 0.1), ("d3", 0.3)):
        BertClassifier(BertTaskConfig(encoder=encoder, num_labels=2, labels=("a", "b"), classifier_dropout=drop)).save_pretrained(
            tmp_path / name, tokenizer=tok)
    code, _, err = run_cli(capsys, "average", tmp_path / "d1", tmp_path / "d3", "--out", tmp_path / "o")
    assert code == 0, err
