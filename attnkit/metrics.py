"""Evaluation metrics for fine-tuning: accuracy, and entity-level precision/recall/F1 for tagging.

Entity-level scores follow the CoNLL-2000 evaluation script ``conlleval`` (Tjong Kim Sang and
Buchholz 2000), which ``seqeval`` reproduces in its default mode:

* a tag is ``O`` or ``X-TYPE`` with ``X`` in ``B``, ``I``, ``E``, ``S`` (IOB2 and IOBES both work);
* a chunk starts at ``B``/``S``, at an ``I``/``E`` that follows ``O`` or a closed chunk (``E``, ``S``),
  or wherever the type changes; it ends before a ``B``/``S``/``O``, after ``E``/``S``, or where the
  type changes. So ``O I-PER I-PER`` is one PER entity (lenient, like conlleval), not an error;
* sentences are joined as if an ``O`` stood between them (no entity crosses a sentence);
* an entity is correct only when its type, first and last token all match; precision, recall and
  F1 are micro-averaged over entities (a score with a zero denominator is 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from attnkit.errors import DataError

Entity = tuple[str, int, int]  # (type, first token, last token), positions over the joined sentences


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-creative-work" -> ("B", "creative-work")``; ``"O" -> ("O", "")``.

    Raises:
        DataError: for a tag that is neither ``O`` nor ``B|I|E|S-TYPE``.
    """
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if prefix not in ("B", "I", "E", "S") or not sep or not kind:
        raise DataError(f"tag {tag!r} is not 'O' or B-/I-/E-/S- followed by an entity type")
    return prefix, kind


def _starts(prev: str, prev_kind: str, cur: str, kind: str) -> bool:
    """Does a chunk start at the current token (conlleval's startOfChunk)?"""
    if cur in ("B", "S"):
        return True
    if cur in ("I", "E") and prev in ("O", "E", "S"):
        return True
    return cur != "O" and kind != prev_kind


def _ends(prev: str, prev_kind: str, cur: str, kind: str) -> bool:
    """Did the chunk of the previous token end before the current one (conlleval's endOfChunk)?"""
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and cur in ("B", "S", "O"):
        return True
    return prev != "O" and kind != prev_kind


def entities(sentences: Sequence[Sequence[str]]) -> list[Entity]:
    """Every entity in a list of tag sequences, numbered over the sentences joined end to end."""
    out: list[Entity] = []
    pos = 0
    for tags in sentences:
        prev, prev_kind, start = "O", "", -1
        for tag in [*tags, "O"]:  # the trailing O closes an open chunk at the sentence's end
            cur, kind = split_tag(tag)
            if prev != "O" and _ends(prev, prev_kind, cur, kind):
                out.append((prev_kind, start, pos - 1))
            if _starts(prev, prev_kind, cur, kind):
                start = pos
            prev, prev_kind = cur, kind
            pos += 1
    return out


@dataclass
class EntityScores:
    """Micro-averaged entity scores, with per-type counts."""

    precision: float
    recall: float
    f1: float
    n_gold: int
    n_pred: int
    n_correct: int
    per_type: dict[str, dict[str, float]] = field(default_factory=dict)


def _prf(correct: int, pred: int, gold: int) -> tuple[float, float, float]:
    p = correct / pred if pred else 0.0
    r = correct / gold if gold else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> EntityScores:
    """Entity-level precision, recall and F1 of predicted tag sequences against gold ones.

    Args:
        gold: per sentence, the gold tag of every token.
        pred: per sentence, the predicted tag of every token (same lengths as ``gold``).

    Returns:
        :class:`EntityScores`, micro-averaged, plus ``per_type[type] = {precision, recall, f1, support}``.
    """
    if len(gold) != len(pred):
        raise DataError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    for i, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise DataError(f"sentence {i}: {len(g)} gold tags but {len(p)} predicted tags")
    g_ents, p_ents = set(entities(gold)), set(entities(pred))
    correct = g_ents & p_ents
    per_type: dict[str, dict[str, float]] = {}
    for kind in sorted({e[0] for e in g_ents | p_ents}):
        n_c = sum(e[0] == kind for e in correct)
        n_p = sum(e[0] == kind for e in p_ents)
        n_g = sum(e[0] == kind for e in g_ents)
        p, r, f = _prf(n_c, n_p, n_g)
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": float(n_g)}
    p, r, f = _prf(len(correct), len(p_ents), len(g_ents))
    return EntityScores(p, r, f, len(g_ents), len(p_ents), len(correct), per_type)


def accuracy(gold: Sequence[object], pred: Sequence[object]) -> float:
    """Fraction of positions where ``pred`` equals ``gold`` (0 for empty input)."""
    if len(gold) != len(pred):
        raise DataError(f"{len(gold)} gold labels but {len(pred)} predictions")
    return sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else 0.0
