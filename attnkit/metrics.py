"""Evaluation metrics: accuracy, ROC AUC, entity precision/recall/F1, SQuAD exact match and F1, and BLEU.

Entity-level scores (:func:`entity_scores`) follow the CoNLL-2000 evaluation script ``conlleval`` (Tjong Kim Sang and
Buchholz 2000), which ``seqeval`` reproduces in its default mode:

* a tag is ``O`` or ``X-TYPE`` with ``X`` in ``B``, ``I``, ``E``, ``S`` (IOB2 and IOBES both work);
* a chunk starts at ``B``/``S``, at an ``I``/``E`` that follows ``O`` or a closed chunk (``E``, ``S``),
  or wherever the type changes; it ends before a ``B``/``S``/``O``, after ``E``/``S``, or where the
  type changes. So ``O I-PER I-PER`` is one PER entity (lenient, like conlleval), not an error;
* sentences are joined as if an ``O`` stood between them (no entity crosses a sentence);
* an entity is correct only when its type, first and last token all match; precision, recall and
  F1 are micro-averaged over entities (a score with a zero denominator is 0).

SQuAD scores (:func:`squad_scores`) are v1.1's official metrics (Rajpurkar et al. 2016, section
6). Both compare normalised strings: lower-cased, ASCII punctuation (Python's
``string.punctuation``) removed, the articles "a", "an", "the" removed as whole words, runs of
whitespace collapsed, in that order, as the official evaluation script does. F1 treats
prediction and gold as bags of whitespace-separated tokens. A question with several gold
answers scores the maximum over them; a question without a prediction scores 0. As in v1.1
(unlike v2.0), an empty normalised prediction or gold gives F1 = 0, even when both are empty
(exact match is still 1 then).

BLEU (:func:`bleu_scores`, Papineni et al. 2002) is sacreBLEU's (Post 2018) corpus score on
detokenized text with its 13a tokenization, cased and lowercased, with the signature that
states how it was computed.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from attnkit.errors import DataError, MissingDependencyError

if TYPE_CHECKING:
    import torch

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


# -- SQuAD v1.1 ----------------------------------------------------------------------------------
_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` (higher: more likely positive) for boolean ``labels``.

    The Mann-Whitney form: the probability that a random positive scores above a random negative, ties
    counting one half, ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` with ``R_pos`` the positives' rank
    sum and tied scores sharing their mean rank. NaN when either class is absent.
    """
    import torch

    s, y = scores.detach().flatten().double(), labels.detach().flatten().bool()
    n_pos = int(y.sum())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)  # sorted distinct scores
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # 1-based mean rank of each distinct score
    rank_sum = float(mean_rank[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


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


def best_over_gold(metric: Callable[[str, str], float], prediction: str, golds: Sequence[str]) -> float:
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


# -- BLEU ------------------------------------------------------------------------------------------
def require_sacrebleu() -> Any:
    """sacreBLEU's ``BLEU`` metric class, imported on first use (sacrebleu is an optional extra).

    Raises:
        MissingDependencyError: sacrebleu is not installed.
    """
    try:
        from sacrebleu.metrics import BLEU
    except ImportError:
        raise MissingDependencyError("BLEU needs sacrebleu, which is not installed; pip install 'attnkit[eval]'") from None
    return BLEU


def bleu_scores(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """Corpus sacreBLEU (13a tokenization), cased and lowercased, with the signatures.

    Args:
        hypotheses: one detokenized translation per line.
        references: the reference translation of each line.

    Returns:
        ``{"bleu", "bleu_signature", "bleu_lc", "bleu_lc_signature"}``.

    Raises:
        MissingDependencyError: sacrebleu is not installed.
    """
    BLEU = require_sacrebleu()
    out: dict[str, Any] = {}
    for key, lowercase in (("bleu", False), ("bleu_lc", True)):
        metric = BLEU(tokenize="13a", lowercase=lowercase)
        out[key] = metric.corpus_score(hypotheses, [references]).score
        out[f"{key}_signature"] = str(metric.get_signature())
    return out


def bleu_by_length(sources: list[str], hypotheses: list[str], references: list[str], *, buckets: int = 3) -> list[dict[str, Any]]:
    """Corpus sacreBLEU of the sentences grouped by source length, shortest group first.

    The sentences are sorted by their source's length in whitespace-separated words (ties keep
    the corpus order) and cut into ``buckets`` groups of equal count (the first groups take one
    more where the count does not divide); each group is scored as its own corpus with
    :func:`bleu_scores`. Exposure bias shows where the gap between the shortest and the longest
    group widens.

    Args:
        sources: the source sentences, which decide the groups.
        hypotheses: one translation per source.
        references: one reference per source.
        buckets: the number of groups (3: thirds).

    Returns:
        One dict per group: ``{"bucket", "sentences", "min_words", "max_words", "bleu", "bleu_lc"}``.
    """
    if not len(sources) == len(hypotheses) == len(references):
        raise ValueError(f"{len(sources)} sources, {len(hypotheses)} hypotheses and {len(references)} references differ in count")
    order = sorted(range(len(sources)), key=lambda i: len(sources[i].split()))
    size, extra = divmod(len(order), buckets)
    out: list[dict[str, Any]] = []
    start = 0
    for b in range(buckets):
        idx = order[start : start + size + (b < extra)]
        start += len(idx)
        if not idx:
            continue
        lengths = [len(sources[i].split()) for i in idx]
        scores = bleu_scores([hypotheses[i] for i in idx], [references[i] for i in idx])
        out.append({"bucket": b, "sentences": len(idx), "min_words": min(lengths), "max_words": max(lengths),
                    "bleu": scores["bleu"], "bleu_lc": scores["bleu_lc"]})
    return out
