"""Majority documents (attnkit/data/majority_documents.py) against counts made from the documents' own words."""

from __future__ import annotations

import re

import pytest

from attnkit.data.glue import read_classification_tsv
from attnkit.data.majority_documents import build_sst2_documents, compose_documents, write_tsv

FILL = "w " * 9  # 10 words a sentence with its tag


def pool(n: int = 60) -> tuple[list[str], list[str]]:
    """Sentences tagged with their class and number (``pos7``, ``neg3``), and a few short ones to be skipped."""
    sentences = [f"pos{i} {FILL}" for i in range(n)] + [f"neg{i} {FILL}" for i in range(n)] + ["pos short", "neg short"]
    return sentences, ["1"] * n + ["0"] * n + ["1", "0"]


def tags(text: str) -> list[str]:
    return re.findall(r"\b(pos\d+|neg\d+|short)\b", text)


@pytest.mark.parametrize("seed", [0, 3])
def test_label_is_the_majority_by_the_evidence_margin(seed: int) -> None:
    sentences, labels = pool()
    docs = compose_documents(sentences, labels, documents=6, words=200, evidence=5, seed=seed)
    assert [d.label for d in docs] == ["0", "1"] * 3
    for d in docs:
        t = tags(d.text)
        assert "short" not in t and len(t) == len(set(t)) == d.sentences  # long sentences only, each once
        pos, neg = sum(x.startswith("pos") for x in t), sum(x.startswith("neg") for x in t)
        assert (pos - neg) == (5 if d.label == "1" else -5)
        assert len(d.text.split()) >= 200 and len(d.text.split()) - 20 < 200  # filler stops at the first pair past 200
        # the evidence is one stretch of 5 sentences of the label's class starting at evidence_at
        words = d.text.split()
        start = round(d.evidence_at * len(words))
        run = tags(" ".join(words[start : start + 50]))
        want = "pos" if d.label == "1" else "neg"
        assert all(x.startswith(want) for x in run)


def test_deterministic_and_evidence_anywhere() -> None:
    sentences, labels = pool()
    a = compose_documents(sentences, labels, documents=40, words=200, evidence=5, seed=1)
    b = compose_documents(sentences, labels, documents=40, words=200, evidence=5, seed=1)
    c = compose_documents(sentences, labels, documents=40, words=200, evidence=5, seed=2)
    assert a == b and a != c
    at = [d.evidence_at for d in a]
    assert min(at) < 0.25 and max(at) > 0.6  # not always at the start


def test_errors_name_the_argument() -> None:
    sentences, labels = pool(10)
    with pytest.raises(ValueError, match="class '0' has 10 sentences"):
        compose_documents(sentences, labels, documents=2, words=200, evidence=5)
    with pytest.raises(ValueError, match="evidence"):
        compose_documents(sentences, labels, documents=2, evidence=0)
    with pytest.raises(ValueError, match="exactly two"):
        compose_documents(sentences, ["1"] * len(sentences), documents=2, words=20)


def test_tsv_round_trip_and_sst2_build(tmp_path) -> None:
    sentences, labels = pool()
    src = tmp_path / "sst2"
    src.mkdir()
    for split in ("train", "dev"):
        (src / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s} \t{y}\n" for s, y in zip(sentences, labels)))
    paths = build_sst2_documents(src, tmp_path / "long", train_documents=4, dev_documents=2, words=150, evidence=3)
    train = read_classification_tsv(paths["train"])
    assert len(train) == 4 and train.labels == ["0", "1", "0", "1"] and train.pairs is None
    docs = compose_documents(sentences, labels, documents=4, words=150, evidence=3, seed=0)
    assert train.texts == [d.text for d in docs]
    assert len(read_classification_tsv(paths["dev"])) == 2
    again = write_tsv(tmp_path / "x.tsv", docs)
    assert again.read_text() == paths["train"].read_text()


def test_cli_writes_the_recipe_folder(tmp_path, capsys) -> None:
    from attnkit import recipes
    from attnkit.cli.main import main

    sentences, labels = pool()
    (tmp_path / "sst2").mkdir()
    for split in ("train", "dev"):
        (tmp_path / "sst2" / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in zip(sentences, labels)))
    args = ["data", "majority-documents", "--data-root", str(tmp_path), "--train-documents", "4", "--dev-documents", "2", "--words", "150"]
    assert main(args) == 0
    d = recipes.get("sst2long-minilm-chunks").configs()["data"]
    assert len(read_classification_tsv(tmp_path / d.train)) == 4 and len(read_classification_tsv(tmp_path / d.dev)) == 2
    assert main([*args[:3], str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
