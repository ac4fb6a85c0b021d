"""ERNIE's entity-level masking from a tagger (train mlm --entities DIR): the entities are those that
`attnkit predict` tags in the same sentences, chunked here by hand, and each becomes one masking unit."""

from __future__ import annotations

import random

from attnkit.cli.main import main
from attnkit.data.pretraining import tokenize_documents
from attnkit.data.segment import PhraseLexicon
from attnkit.data.wordpiece import WordPieceTokenizer
from tests.cli.test_cli_finetune import FAST, root, tagged  # noqa: F401  (root: the tiny BERT and its data)


def chunks(lines: list[str]) -> set[str]:
    """Entities of CoNLL lines (word<TAB>tag), by hand: a B- tag opens one, I- of the same type continues it."""
    out, words, kind = set(), [], None
    for line in [*lines, ""]:
        word, tag = line.split("\t") if line else ("", "O")
        if tag.startswith("I-") and kind == tag[2:]:
            words.append(word)
            continue
        if words:
            out.add(" ".join(words))
        words, kind = ([word], tag[2:]) if tag != "O" else ([], None)
    return out


def test_entities_from_a_tagger_become_units(root, tmp_path, capsys):  # noqa: F811
    tagger = tmp_path / "ner"
    assert main(["finetune", "ner", "--model", str(root / "tiny"), "--train", str(root / "train.conll"), "--dev", str(root / "dev.conll"),
                 "--out", str(tagger), "--epochs", "10", *FAST, "--set", "train.optim.lr=3e-3", "--set", "train.batch_size=16"]) == 0
    rng = random.Random(5)
    docs = [[" ".join(w for w, _ in s) for s in tagged(rng, 6)] for _ in range(12)]
    (tmp_path / "t.txt").write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n")
    capsys.readouterr()
    (tmp_path / "lines.txt").write_text("".join(s + "\n" for doc in docs for s in doc))
    assert main(["predict", "--model", str(tagger / "model"), str(tmp_path / "lines.txt"), "--device", "cpu"]) == 0
    expected = chunks([line for line in capsys.readouterr().out.splitlines()])
    assert expected  # the tagger finds names and cities
    out = tmp_path / "run"
    assert main(["train", "mlm", "--model", str(root / "tiny"), "--text", str(tmp_path / "t.txt"), "--whole-word", "--entities",
                 str(tagger / "model"), "--out", str(out), "--no-progress", "--max-seq-len", "32", "--set", "train.steps=2",
                 "--set", "train.batch_size=4", "--set", "train.eval.every=2", "--set", "train.device=cpu",
                 "--set", "data.max_eval_pairs=4"]) == 0
    found = (out / "entities.txt").read_text().splitlines()
    assert {e.lower() for e in found} == {e.lower() for e in expected}
    several = [e for e in found if " " in e]
    assert several  # "alice smith": two words, one unit
    tok = WordPieceTokenizer.from_file(root / "tiny")
    sentence = f"the movie with {several[0]} was good"
    doc = tokenize_documents([[sentence]], tok, phrases=PhraseLexicon(found))[0][0]
    n_words = sum(doc.starts)
    assert n_words == len(sentence.split()) - several[0].count(" ")  # the entity's words make one unit


def test_a_model_that_is_no_tagger_is_refused_in_one_line(root, tmp_path, capsys):  # noqa: F811
    (tmp_path / "t.txt").write_text("alice went to paris\n\nbob went to rome\n")
    code = main(["train", "mlm", "--model", str(root / "tiny"), "--text", str(tmp_path / "t.txt"), "--whole-word", "--entities",
                 str(root / "tiny"), "--out", str(tmp_path / "o"), "--no-progress", "--max-seq-len", "32", "--set", "train.device=cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "give a tagger from attnkit finetune ner" in err and len(err.splitlines()) == 1
