"""SQuAD-style extractive QA data: reading, splitting by article, and windows over long contexts.

The file format is SQuAD v1.1 (Rajpurkar et al. 2016): ``{"data": [{"title", "paragraphs":
[{"context", "qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}``.
An answer is kept only when ``context[answer_start : answer_start + len(text)] == text``;
the others are counted and skipped, and a question left with no answer is skipped too.

Model inputs follow Devlin et al. 2019, section 4.2: ``[CLS] question [SEP] context [SEP]``
with segment ids 0 / 1. A context longer than fits is cut into windows (the "sliding window"
of the released BERT code): each window holds ``max_len - len(question) - 3`` context
tokens, and window ``k + 1`` starts ``doc_stride`` tokens after window ``k``, so neighbouring
windows overlap by ``window - doc_stride`` tokens. A window's labels are the positions of
the answer's first and last token within it, or 0 and 0 (the [CLS] token) when the answer
does not lie entirely inside that window. Questions longer than ``max_question_len`` tokens
keep their first ``max_question_len`` tokens (counted).

Every context token carries its character offsets into the original context, so a span of
tokens maps back to the exact characters of the context (:mod:`attnkit.training.qa`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from attnkit.data.batching import bucketed_batches, pad
from attnkit.data.transfer import TensorBatch
from attnkit.errors import ConfigError, DataError


@dataclass
class QAExample:
    """One question about one context, with its gold answers ``(text, character start)``."""

    id: str
    question: str
    context: str
    answers: list[tuple[str, int]]
    title: str = ""

    @property
    def answer_texts(self) -> list[str]:
        return [text for text, _ in self.answers]


@dataclass
class SquadData:
    """The examples of a file (or of some of its articles) and what was skipped on the way."""

    examples: list[QAExample]
    bad_answers: int = 0  # answers whose offsets did not match the context
    skipped_questions: int = 0  # questions left with no usable answer
    articles: list[str] = field(default_factory=list)  # titles, in file order

    def report(self) -> str:
        return (
            f"{len(self.examples)} questions from {len(self.articles)} articles; "
            f"{self.bad_answers} answers whose offsets do not match the context skipped, "
            f"{self.skipped_questions} questions without a usable answer skipped"
        )


def _field(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise DataError(f"{where}: missing {key!r}; is this a SQuAD v1.1 file?")
    value = obj[key]
    if not isinstance(value, kind):
        raise DataError(f"{where}: {key!r} should be a {kind.__name__}, got {type(value).__name__}")
    return value


def parse_squad(data: Any, source: str = "<data>") -> list[tuple[str, SquadData]]:
    """Parse a SQuAD JSON object into one :class:`SquadData` per article, in file order."""
    articles = []
    for a, article in enumerate(_field(data, "data", list, source)):
        where = f"{source}: data[{a}]"
        title = str(article.get("title", f"article {a}")) if isinstance(article, dict) else ""
        part = SquadData(examples=[], articles=[title])
        for p, para in enumerate(_field(article, "paragraphs", list, where)):
            context = _field(para, "context", str, f"{where}.paragraphs[{p}]")
            for q, qa in enumerate(_field(para, "qas", list, f"{where}.paragraphs[{p}]")):
                wq = f"{where}.paragraphs[{p}].qas[{q}]"
                answers = []
                for ans in _field(qa, "answers", list, wq):
                    text, start = (ans.get("text"), ans.get("answer_start")) if isinstance(ans, dict) else (None, None)
                    if isinstance(text, str) and text and isinstance(start, int) and start >= 0 and context[start : start + len(text)] == text:
                        answers.append((text, start))
                    else:
                        part.bad_answers += 1
                if not answers:
                    part.skipped_questions += 1
                    continue
                qid = str(qa.get("id", f"{a}-{p}-{q}"))
                part.examples.append(QAExample(qid, _field(qa, "question", str, wq), context, answers, title))
        articles.append((title, part))
    return articles


def _merge(parts: list[SquadData]) -> SquadData:
    out = SquadData(examples=[])
    for p in parts:
        out.examples += p.examples
        out.bad_answers += p.bad_answers
        out.skipped_questions += p.skipped_questions
        out.articles += p.articles
    return out


def _load_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"SQuAD file {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None


def read_squad(path: str | os.PathLike) -> SquadData:
    """All questions of a SQuAD v1.1 JSON file; raises DataError if there are none."""
    data = _merge([part for _, part in parse_squad(_load_json(path), str(path))])
    if not data.examples:
        raise DataError(f"{path} has no question with a usable answer ({data.report()})")
    return data


def split_articles(path: str | os.PathLike, n_eval: int) -> tuple[SquadData, SquadData]:
    """Split one file by article: the last ``n_eval`` articles evaluate, the others train.

    Splitting by article (not by question) keeps every context on one side, so evaluation
    measures reading unseen passages.
    """
    parts = parse_squad(_load_json(path), str(path))
    if not 0 < n_eval < len(parts):
        raise ConfigError(f"split_articles={n_eval} is not allowed; {path} has {len(parts)} articles, keep at least one on each side")
    train, dev = _merge([p for _, p in parts[:-n_eval]]), _merge([p for _, p in parts[-n_eval:]])
    for name, d in (("training", train), ("evaluation", dev)):
        if not d.examples:
            raise DataError(f"the {name} articles of {path} have no question with a usable answer")
    return train, dev


# -- windows -------------------------------------------------------------------------------


@dataclass
class QAWindow:
    """One model input: ``[CLS] question [SEP] context[start:start+len] [SEP]``."""

    example: int  # index of its example in the list given to :func:`make_windows`
    ids: list[int]
    segment_ids: list[int]
    offsets: list[tuple[int, int] | None]  # per position: (start, end) characters in the context, None outside the context
    max_context: list[bool]  # per position: True where this window gives the token its most context (see :func:`max_context`)
    start_label: int  # answer's first token in this window, or 0 ([CLS]) when the answer is not inside
    end_label: int

    @property
    def context_positions(self) -> range:
        """Positions of the window's context tokens."""
        first = self.segment_ids.index(1)
        return range(first, len(self.ids) - 1)


@dataclass
class QAWindows:
    """The windows of a list of examples, and what had to be cut."""

    windows: list[QAWindow]
    truncated_questions: int = 0
    unlabelled: int = 0  # examples whose answer could not be placed on tokens (whitespace-only spans)


def window_starts(n_tokens: int, window: int, doc_stride: int) -> list[tuple[int, int]]:
    """``(start, length)`` of each window over ``n_tokens`` context tokens.

    Windows start at 0, doc_stride, 2 doc_stride, ... until one reaches the end; every token
    is in at least one window because ``doc_stride <= window``.
    """
    if window < 1:
        raise ConfigError(f"window={window} is not allowed; at least one context token must fit")
    if not 0 < doc_stride <= window:
        raise ConfigError(f"doc_stride={doc_stride} is not allowed; it must be in [1, {window}] (the context tokens per window), or tokens would be skipped")
    spans, start = [], 0
    while True:
        length = min(window, n_tokens - start)
        spans.append((start, length))
        if start + length >= n_tokens:
            return spans
        start += doc_stride


def max_context(spans: list[tuple[int, int]], k: int, token: int) -> bool:
    """True if window ``k`` is the one where ``token`` has the most context on its shorter side.

    The released BERT code scores a token in a window by ``min(left, right) + 0.01 * length``
    and, when windows overlap, predicts a token's start only from its best-scoring window.
    """
    best, best_score = -1, -1.0
    for j, (start, length) in enumerate(spans):
        if not start <= token < start + length:
            continue
        score = min(token - start, start + length - 1 - token) + 0.01 * length
        if score > best_score:
            best, best_score = j, score
    return best == k


def char_to_token_span(offsets: list[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """First and last token covering characters ``[start, end)``, or None if no token falls inside."""
    first = next((t for t, (s, e) in enumerate(offsets) if e > start), None)
    last = next((t for t in range(len(offsets) - 1, -1, -1) if offsets[t][0] < end), None)
    if first is None or last is None or first > last:
        return None
    return first, last


def make_windows(
    tokenizer: Any,
    examples: list[QAExample],
    *,
    max_len: int = 384,
    doc_stride: int = 128,
    max_question_len: int = 64,
) -> QAWindows:
    """Tokenize question/context pairs into labelled windows.

    Args:
        tokenizer: a :class:`attnkit.data.wordpiece.WordPieceTokenizer`.
        examples: the questions; the first gold answer gives the training labels.
        max_len: tokens per window, specials included (at most the model's position limit).
        doc_stride: tokens between the starts of consecutive windows (at most the context
            tokens a window holds, which depends on the question's length).
        max_question_len: longer questions keep their first this many tokens (counted); at
            most ``max_len - 4``, so that every window holds a context token.
    """
    if max_len < 5:
        raise ConfigError(f"max_len={max_len} is not allowed; a window needs [CLS], a question token, [SEP], a context token and [SEP]")
    if max_question_len < 1:
        raise ConfigError(f"max_question_len={max_question_len} is not allowed; it must be at least 1")
    max_question_len = min(max_question_len, max_len - 4)  # leave room for one context token
    tok = tokenizer.tokenizer
    questions = tok.encode_batch([e.question for e in examples], add_special_tokens=False)
    contexts = tok.encode_batch([e.context for e in examples], add_special_tokens=False)
    out = QAWindows(windows=[])
    for n, (ex, q, c) in enumerate(zip(examples, questions, contexts)):
        q_ids = q.ids
        if len(q_ids) > max_question_len:
            q_ids = q_ids[:max_question_len]
            out.truncated_questions += 1
        window = max_len - len(q_ids) - 3
        text, a_start = ex.answers[0]
        answer = char_to_token_span(c.offsets, a_start, a_start + len(text))
        if answer is None:
            out.unlabelled += 1
        spans = window_starts(len(c.ids), window, min(doc_stride, window))
        head = [tokenizer.cls_id, *q_ids, tokenizer.sep_id]
        for k, (start, length) in enumerate(spans):
            ids = head + c.ids[start : start + length] + [tokenizer.sep_id]
            first = len(head)  # position of context token `start`
            label = (0, 0)
            if answer is not None and start <= answer[0] and answer[1] < start + length:
                label = (answer[0] - start + first, answer[1] - start + first)
            out.windows.append(
                QAWindow(
                    example=n,
                    ids=ids,
                    segment_ids=[0] * len(head) + [1] * (length + 1),
                    offsets=[None] * len(head) + list(c.offsets[start : start + length]) + [None],
                    max_context=[False] * len(head) + [max_context(spans, k, start + i) for i in range(length)] + [False],
                    start_label=label[0],
                    end_label=label[1],
                )
            )
    return out


@dataclass
class QABatch(TensorBatch):
    ids: Tensor  # (B, T)
    segment_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    start: Tensor  # (B,) start labels
    end: Tensor  # (B,) end labels
    index: list[int]  # which windows these rows are


def collate(windows: list[QAWindow], index: list[int], pad_id: int) -> QABatch:
    """Pad the windows ``index`` to the longest of them (:func:`attnkit.data.batching.pad`)."""
    rows = [windows[i] for i in index]
    ids, mask = pad([w.ids for w in rows], pad_id, return_mask=True)  # (B, T)
    seg = pad([w.segment_ids for w in rows], 0)  # (B, T)
    start = torch.tensor([w.start_label for w in rows])
    end = torch.tensor([w.end_label for w in rows])
    return QABatch(ids, seg, mask.long(), start, end, list(index))


def batches(
    windows: list[QAWindow], batch_size: int, pad_id: int, *, shuffle: bool = False, seed: int = 0, bucket: int = 50
) -> Iterator[QABatch]:
    """Batches of ``batch_size`` windows of similar length (each padded to its own longest).

    Runs of ``bucket * batch_size`` windows (shuffled by ``seed`` first when ``shuffle``) are
    sorted by length and cut into batches, so little of a batch is padding; with ``shuffle``
    the batches are then shuffled too (:func:`attnkit.data.batching.bucketed_batches`, both
    shuffles drawn from a ``torch.Generator`` seeded with ``seed``). Every window appears
    exactly once; ``QABatch.index`` says which.
    """
    rng = torch.Generator().manual_seed(seed) if shuffle else None
    lengths = [len(w.ids) for w in windows]
    for index in bucketed_batches(lengths, batch_size, bucket_size=max(bucket, 1), shuffle=shuffle, rng=rng):
        yield collate(windows, index, pad_id)
