"""``attnkit tokenizer train``: WordPiece, BPE and unigram vocabularies from text files; one-line errors."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from attnkit.cli.main import main
from attnkit.data.wordpiece import WordPieceTokenizer

TEXT = "\n".join(["The quick brown fox jumps over the lazy dog."] * 40 + ["Pack my box with five dozen liquor jugs!"] * 40)


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
def test_train_each_kind(tmp_path, capsys, kind):
    (tmp_path / "a.txt").write_text(TEXT)
    code = main(["tokenizer", "train", "--kind", kind, "--vocab-size", "150", "--out", str(tmp_path), str(tmp_path / "a.txt")])
    assert code == 0 and f"({kind}," in capsys.readouterr().out
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.get_vocab_size() <= 150
    if kind == "wordpiece":
        wp = WordPieceTokenizer.from_file(tmp_path)
        assert wp.decode(wp(["The lazy DOG"]).ids[0].tolist()) == "the lazy dog"


def test_cased_wordpiece_keeps_case(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(TEXT)
    assert main(["tokenizer", "train", "--cased", "--vocab-size", "150", "--out", str(tmp_path / "t.json"), str(tmp_path / "a.txt")]) == 0
    wp = WordPieceTokenizer.from_file(tmp_path / "t.json")
    assert "The" in wp.tokenize("The dog")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--vocab-size", "150", "nowhere.txt"], "nowhere.txt does not exist"),
        (["--vocab-size", "3", "a.txt"], "vocab_size=3 is too small"),
        (["--vocab-size", "150", "empty.txt"], "every training file is empty"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text(TEXT)
    (tmp_path / "empty.txt").write_text("\n")
    code = main(["tokenizer", "train", "--out", "tok.json", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
