"""Entity-level precision/recall/F1 (attnkit.metrics) against hand-worked cases and the seqeval package."""

from __future__ import annotations

import random
import warnings

import pytest

from attnkit.errors import DataError
from attnkit.metrics import accuracy, entities, entity_scores, split_tag


def test_split_tag():
    assert split_tag("B-creative-work") == ("B", "creative-work")
    assert split_tag("O") == ("O", "")
    for bad in ("X-PER", "B-", "B", "per"):
        with pytest.raises(DataError):
            split_tag(bad)


def test_entities_conlleval_rules():
    # B opens; I continues the same type; a type change or O closes; I after O opens (lenient, as conlleval)
    assert entities([["B-PER", "I-PER", "O", "B-LOC"]]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert entities([["O", "I-PER", "I-PER"]]) == [("PER", 1, 2)]
    assert entities([["B-PER", "I-LOC"]]) == [("PER", 0, 0), ("LOC", 1, 1)]
    assert entities([["B-PER", "B-PER"]]) == [("PER", 0, 0), ("PER", 1, 1)]
    assert entities([["S-PER", "B-LOC", "E-LOC"]]) == [("PER", 0, 0), ("LOC", 1, 2)]
    # no entity crosses a sentence boundary (an O stands between sentences)
    assert entities([["B-PER"], ["I-PER"]]) == [("PER", 0, 0), ("PER", 2, 2)]


def test_scores_by_hand():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    s = entity_scores(gold, pred)
    assert (s.n_gold, s.n_pred, s.n_correct) == (3, 3, 2)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3) and s.f1 == pytest.approx(2 / 3)
    assert s.per_type["LOC"]["f1"] == 0.0 and s.per_type["PER"]["f1"] == 1.0
    # a boundary error is a miss and a false alarm
    s = entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert (s.precision, s.recall) == (0.0, 0.0) and s.f1 == 0.0
    assert entity_scores([["O"]], [["O"]]).f1 == 0.0  # nothing to find: zero denominators give 0
    with pytest.raises(DataError):
        entity_scores([["O", "O"]], [["O"]])


def test_accuracy():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5


@pytest.mark.parametrize("scheme", ["bio", "iobes"])
def test_matches_seqeval_on_random_tags(scheme):
    seqeval_metrics = pytest.importorskip("seqeval.metrics")
    prefixes = "BI" if scheme == "bio" else "BIES"
    tags = ["O", *(f"{p}-{t}" for p in prefixes for t in ("PER", "LOC", "creative-work"))]
    rng = random.Random(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on zero denominators
        for _ in range(500):
            gold = [[rng.choice(tags) for _ in range(rng.randint(0, 9))] for _ in range(rng.randint(1, 5))]
            # predictions: the gold tags with some corrupted, so that many entities match
            pred = [[t if rng.random() < 0.6 else rng.choice(tags) for t in sent] for sent in gold]
            s = entity_scores(gold, pred)
            assert s.precision == pytest.approx(seqeval_metrics.precision_score(gold, pred), abs=1e-12)
            assert s.recall == pytest.approx(seqeval_metrics.recall_score(gold, pred), abs=1e-12)
            assert s.f1 == pytest.approx(seqeval_metrics.f1_score(gold, pred), abs=1e-12)
