"""SQuAD v1.1's official metrics: exact match and token-level F1 (Rajpurkar et al. 2016, section 6).

Both compare normalised strings. Normalisation lower-cases, removes ASCII punctuation
(Python's ``string.punctuation``), removes the articles "a", "an", "the" as whole words and
collapses runs of whitespace, in that order, as the official evaluation script does.
F1 treats prediction and gold as bags of whitespace-separated tokens. A question with
several gold answers scores the maximum over them; a question without a prediction scores 0.

As in v1.1 (unlike v2.0), an empty normalised prediction or gold gives F1 = 0, even when both
are empty (exact match is still 1 then).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Mapping, Sequence

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 if the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall between the normalised strings (bags of tokens)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    same = sum((Counter(pred) & Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_over_gold(metric, prediction: str, golds: Sequence[str]) -> float:  # type: ignore[no-untyped-def]
    """The maximum of ``metric(prediction, gold)`` over the gold answers."""
    return max(metric(prediction, g) for g in golds)


def squad_scores(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Exact match and F1 in percent, averaged over every question of ``golds``.

    Args:
        predictions: question id -> predicted answer text.
        golds: question id -> gold answer texts (at least one each).

    Returns:
        ``{"exact_match": ..., "f1": ..., "missing": number of questions without a prediction}``.
    """
    em = f = 0.0
    missing = 0
    for qid, answers in golds.items():
        if qid not in predictions:
            missing += 1
            continue
        em += best_over_gold(exact_match, predictions[qid], answers)
        f += best_over_gold(f1, predictions[qid], answers)
    n = max(len(golds), 1)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f / n, "missing": float(missing)}
