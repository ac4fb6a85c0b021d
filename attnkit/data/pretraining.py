"""BERT pretraining data: documents -> sentences -> packed sentence pairs (Devlin et al. 2019, section 3.1 and appendix A.2).

Documents and sentences (:func:`read_documents`):

* a document is a blank-line-separated paragraph of the text (``documents="paragraphs"``)
  or a whole file (``documents="files"``);
* a sentence is a non-empty line (``sentences="lines"``), or a line cut after ``.``, ``!``
  or ``?`` followed by white space (``sentences="punct"``, the regex :data:`SENTENCE_END`).

Pairs (:func:`make_pairs`) follow the released BERT data generator (``create_instances_from_document``):

* a document's sentences are taken in order into chunks of about ``target`` tokens
  (``max_seq_len - 3``, or with probability ``short_seq_prob`` a random shorter target);
* the chunk is cut at a random sentence boundary into segment A and segment B:

  - ``pair_task="nsp"``: with probability 0.5 the label is IsNext (0) and B is the rest
    of the chunk; otherwise NotNext (1) and B is a run of sentences from a random *other*
    document (starting at a random sentence, filling what A leaves of the target), and the
    unused sentences of the chunk go back to the document for the next chunk.
  - ``pair_task="sop"`` (ALBERT, Lan et al. 2020, section 4.1): B is the rest of the chunk
    and with probability 0.5 A and B swap places (label 1 = swapped, 0 = in order).
  - ``pair_task="sso"`` (StructBERT's sentence structural objective, Wang et al. 2020, section
    2.2): three classes of a third each, B follows A (0: NSP's IsNext), B precedes A (1: SOP's
    swap), B from another document (2: NSP's NotNext, built as NSP builds it).
  - ``pair_task="none"``: the whole chunk is one segment (RoBERTa's FULL-SENTENCES within a
    document, Liu et al. 2019, section 4.2).

Where this deviates from the released code, on purpose (segments stay whole, labels unbiased):

* A chunk takes a sentence only if it still fits in ``max_seq_len - 3`` tokens (BERT fills
  past the target, then cuts tokens off the longer segment at a random end, which can cut
  words and, at the A|B junction, the very boundary the label is about). A sentence longer
  than half a sequence is cut beforehand into pieces at word starts (never between a word
  and its ``##`` continuation). The only tokens ever dropped are the tail of a NotNext B
  taken from another document, cut at a word start. So ``[CLS] A [SEP] B [SEP]`` never
  exceeds ``max_seq_len`` and the A|B junction is always a sentence boundary.
* A chunk holds at least two sentences when the document has two left, and a sentence that
  would be left alone at a document's end joins the chunk (or the chunk leaves it a partner).
* The NSP label is drawn first and a one-sentence chunk (a one-sentence document) gives no
  pair; BERT instead forces NotNext on one-sentence chunks, which tilts the 50/50 split.

Masking is not done here; it is drawn per batch (:mod:`attnkit.objectives.mlm`).
"""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import Tensor

from attnkit.config import Config, check
from attnkit.data.batching import pad
from attnkit.data.transfer import TensorBatch
from attnkit.data.text import read_text_file
from attnkit.errors import DataError

PairTask = Literal["none", "nsp", "sop", "sso"]
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")  # sentences="punct": cut after . ! ? and the white space that follows


@dataclass(frozen=True, kw_only=True)
class PretrainingDataConfig(Config):
    """How documents become training sequences.

    ``valid_fraction`` of the documents (the last ones, at least one) are held out for
    evaluation, of which at most ``max_eval_pairs`` pairs are used.
    """

    max_seq_len: int = 128
    short_seq_prob: float = 0.1
    documents: Literal["paragraphs", "files"] = "paragraphs"
    sentences: Literal["lines", "punct"] = "lines"
    valid_fraction: float = 0.05
    max_eval_pairs: int = 2048

    def validate(self) -> None:
        check(self.max_seq_len >= 8, "max_seq_len", self.max_seq_len, "must be at least 8 ([CLS] A [SEP] B [SEP] and some text)")
        check(0.0 <= self.short_seq_prob <= 1.0, "short_seq_prob", self.short_seq_prob, "must be in [0, 1]")
        check(0.0 < self.valid_fraction < 1.0, "valid_fraction", self.valid_fraction, "must be in (0, 1)")
        check(self.max_eval_pairs >= 1, "max_eval_pairs", self.max_eval_pairs, "must be >= 1")


# -- reading ---------------------------------------------------------------------------------
def split_sentences(paragraph: str, how: Literal["lines", "punct"] = "lines") -> list[str]:
    """The sentences of a paragraph: its non-empty lines, or (``punct``) those lines cut by :data:`SENTENCE_END`."""
    lines = [line.strip() for line in paragraph.splitlines() if line.strip()]
    if how == "lines":
        return lines
    return [s for line in lines for s in SENTENCE_END.split(line) if s.strip()]


def read_documents(
    paths: Sequence[str | os.PathLike],
    *,
    documents: Literal["paragraphs", "files"] = "paragraphs",
    sentences: Literal["lines", "punct"] = "lines",
) -> list[list[str]]:
    """Read UTF-8 text files (gzipped where the name ends in ``.gz``) into documents, each a list of sentences.

    Raises:
        DataError: a file is missing, not valid gzip, not UTF-8, or no file holds any text.
    """
    docs: list[list[str]] = []
    for p in map(Path, paths):
        text = read_text_file(p)
        parts = [text] if documents == "files" else re.split(r"\n[ \t\r\f\v]*\n", text)
        docs.extend(d for d in (split_sentences(part, sentences) for part in parts) if d)
    if not docs:
        names = ", ".join(str(p) for p in paths)
        raise DataError(f"{names} {'is' if len(paths) == 1 else 'are'} empty; masked-LM pretraining needs text")
    return docs


# -- tokenized documents ---------------------------------------------------------------------------
@dataclass
class Sentence:
    """One tokenized sentence (or piece of one)."""

    ids: list[int]
    starts: list[bool]  # True where a token begins a word (whole-word masking, word-start cuts)


Document = list[Sentence]


def tokenize_documents(docs: list[list[str]], tokenizer: Any, segmenter: str = "none", phrases: Any = None) -> list[Document]:
    """Tokenize every sentence once (``tokenizer`` is a :class:`~attnkit.data.wordpiece.WordPieceTokenizer`); empty ones are dropped.

    A token begins a word where the tokenizer's pre-tokenizer starts one, or with a ``segmenter`` other than
    ``none``, where that segmenter's words begin (Chinese whole-word masking, :mod:`attnkit.data.segment`);
    ``phrases`` (a :class:`~attnkit.data.segment.PhraseLexicon`) makes each of its phrases one word (ERNIE).
    """
    from attnkit.data.segment import starts_function

    segmented = starts_function(segmenter)  # type: ignore[arg-type]
    flat = [s for d in docs for s in d]
    encodings = tokenizer.tokenizer.encode_batch(flat, add_special_tokens=False)  # the tokenizers library, in parallel
    out: list[Document] = []
    i = 0
    for d in docs:
        doc: Document = []
        for text, enc in zip(d, encodings[i : i + len(d)]):
            if enc.ids:
                words = enc.word_ids
                starts = ([t == 0 or words[t] != words[t - 1] for t in range(len(words))] if segmented is None
                          else segmented(text, enc.offsets))
                if phrases is not None:
                    starts = phrases.merge(text, enc.offsets, starts)
                doc.append(Sentence(list(enc.ids), starts))
        i += len(d)
        if doc:
            out.append(doc)
    return out


def cut_long_sentences(doc: Document, limit: int) -> Document:
    """Cut every sentence longer than ``limit`` tokens into pieces of at most ``limit``, at word starts where one exists."""
    out: Document = []
    for s in doc:
        ids, starts = s.ids, s.starts
        while len(ids) > limit:
            cut = last_word_start(starts, limit)
            out.append(Sentence(ids[:cut], starts[:cut]))
            ids, starts = ids[cut:], starts[cut:]
        out.append(Sentence(ids, starts))
    return out


def last_word_start(starts: list[bool], limit: int) -> int:
    """The largest ``k <= limit`` with ``k > 0`` such that token ``k`` starts a word (``limit`` if none does)."""
    for k in range(min(limit, len(starts) - 1), 0, -1):
        if starts[k]:
            return k
    return min(limit, len(starts))


# -- pairs -----------------------------------------------------------------------------------
@dataclass
class Pair:
    """One training sequence before masking: ``[CLS] a [SEP] b [SEP]`` (or ``[CLS] a [SEP]`` without b).

    ``a_span`` / ``b_span`` are ``(document, first sentence, end sentence)`` of where the
    segments came from (sentence indices after cutting long sentences); ``b_truncated``
    says B's last sentence lost its tail (only for NotNext).
    """

    a: list[int]
    b: list[int]
    a_starts: list[bool]
    b_starts: list[bool]
    label: int  # nsp: 0 IsNext, 1 NotNext; sop: 0 in order, 1 swapped; sso: 0 next, 1 previous, 2 random; none: -1
    a_span: tuple[int, int, int]
    b_span: tuple[int, int, int] | None
    b_truncated: bool = False

    def __len__(self) -> int:
        return len(self.a) + len(self.b) + (3 if self.b else 2)


def _join(doc: Document, lo: int, hi: int) -> tuple[list[int], list[bool]]:
    ids: list[int] = []
    starts: list[bool] = []
    for s in doc[lo:hi]:
        ids += s.ids
        starts += s.starts
    return ids, starts


def make_pairs(
    docs: list[Document],
    *,
    max_seq_len: int,
    pair_task: PairTask = "none",
    short_seq_prob: float = 0.1,
    rng: random.Random,
    doc_ids: Sequence[int] | None = None,
    random_pool: Sequence[int] | None = None,
) -> list[Pair]:
    """Build the pairs of the documents ``doc_ids`` (default: all), in document order.

    Args:
        docs: tokenized documents whose sentences are at most ``(max_seq_len - 3) // 2``
            tokens (see :func:`cut_long_sentences`).
        pair_task: ``"nsp"``, ``"sop"``, ``"sso"`` or ``"none"`` (see the module docstring).
        rng: the source of every random choice (a fixed seed gives fixed pairs).
        random_pool: the documents a NotNext B may come from (default: ``doc_ids``); the
            current document is never used.

    Raises:
        DataError: NSP or SSO with fewer than two documents in the pool.
    """
    max_tokens = max_seq_len - 3  # [CLS] A [SEP] B [SEP]
    doc_ids = list(range(len(docs))) if doc_ids is None else list(doc_ids)
    pool = list(doc_ids) if random_pool is None else list(random_pool)
    if pair_task in ("nsp", "sso") and len(set(pool)) < 2:
        what = "next-sentence prediction" if pair_task == "nsp" else "the sentence structural objective"
        raise DataError(f"{what} needs at least two documents (blank-line-separated paragraphs); the text has one")
    pairs: list[Pair] = []
    for d in doc_ids:
        doc = docs[d]
        i = 0
        while i < len(doc):
            target = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
            end = _chunk_end(doc, i, target, max_tokens)
            if pair_task == "none":
                ids, starts = _join(doc, i, end)
                pairs.append(Pair(ids, [], starts, [], -1, (d, i, end), None))
                i = end
                continue
            if end - i < 2:  # a one-sentence document has no pair of its own
                i = end
                continue
            cut = rng.randint(i + 1, end - 1)  # A = doc[i:cut], B = doc[cut:end]
            a, a_starts = _join(doc, i, cut)
            label = int(rng.random() < 0.5) if pair_task != "sso" else min(int(rng.random() * 3), 2)
            if pair_task == "sso" and label < 2:  # next or previous: SOP's two orders of the chunk's halves
                b, b_starts = _join(doc, cut, end)
                first, second = ((a, a_starts, (d, i, cut)), (b, b_starts, (d, cut, end)))[:: 1 if label == 0 else -1]
                pairs.append(Pair(first[0], second[0], first[1], second[1], label, first[2], second[2]))
                i = end
            elif pair_task == "sso":  # random: NSP's NotNext
                p = _random_next(docs, d, pool, a, a_starts, (d, i, cut), target, max_tokens, rng)
                p.label = 2
                pairs.append(p)
                i = cut
            elif pair_task == "sop":
                b, b_starts = _join(doc, cut, end)
                if label:  # swapped: the later segment first
                    pairs.append(Pair(b, a, b_starts, a_starts, 1, (d, cut, end), (d, i, cut)))
                else:
                    pairs.append(Pair(a, b, a_starts, b_starts, 0, (d, i, cut), (d, cut, end)))
                i = end
            elif label == 0:
                b, b_starts = _join(doc, cut, end)
                pairs.append(Pair(a, b, a_starts, b_starts, 0, (d, i, cut), (d, cut, end)))
                i = end
            else:
                pairs.append(_random_next(docs, d, pool, a, a_starts, (d, i, cut), target, max_tokens, rng))
                i = cut  # the chunk's unused sentences go back (BERT: "we don't want to waste them")
    return pairs


def _chunk_end(doc: Document, i: int, target: int, max_tokens: int) -> int:
    """End of the chunk starting at sentence ``i``: sentences while they fill ``target``, at least two, and no orphan left."""
    n = len(doc)
    end, length = i + 1, len(doc[i].ids)
    while end < n and (length + len(doc[end].ids) <= target or end - i < 2) and length + len(doc[end].ids) <= max_tokens:
        length += len(doc[end].ids)
        end += 1
    if end == n - 1:  # do not leave one sentence alone at the end: take it, or leave it a partner
        if length + len(doc[end].ids) <= max_tokens:
            end = n
        elif end - i >= 3:
            end -= 1
    return end


def _random_next(
    docs: list[Document], d: int, pool: list[int], a: list[int], a_starts: list[bool], a_span: tuple[int, int, int],
    target: int, max_tokens: int, rng: random.Random,
) -> Pair:
    """A NotNext pair: B is a run of sentences from a random document other than ``d``."""
    others = [o for o in pool if o != d]
    other = others[rng.randrange(len(others))]
    doc = docs[other]
    start = rng.randrange(len(doc))
    budget = max(target - len(a), 1)
    end, length = start + 1, len(doc[start].ids)
    while end < len(doc) and length + len(doc[end].ids) <= budget:
        length += len(doc[end].ids)
        end += 1
    b, b_starts = _join(doc, start, end)
    room = max_tokens - len(a)
    truncated = len(b) > room
    if truncated:  # only a random B is ever cut, at its outer end and at a word start
        keep = last_word_start(b_starts, room)
        b, b_starts = b[:keep], b_starts[:keep]
    return Pair(a, b, a_starts, b_starts, 1, a_span, (other, start, end), truncated)


# -- batches ------------------------------------------------------------------------------------
@dataclass
class PretrainingBatch(TensorBatch):
    """Padded pairs before masking (``labels``/``ids`` are filled by the task after masking)."""

    ids: Tensor  # (B, T) [CLS] A [SEP] B [SEP] [PAD]...
    segment_ids: Tensor  # (B, T) 0 for [CLS] A [SEP], 1 for B [SEP]
    attention_mask: Tensor  # (B, T) 1 real, 0 padding
    maskable: Tensor  # (B, T) bool: real, non-special tokens
    word_index: Tensor  # (B, T) the word each token belongs to, numbered along the row
    pair_labels: Tensor | None  # (B,) or None for pair_task="none"
    mlm_labels: Tensor | None = None  # (B, T) after masking: original id at chosen positions, IGNORE elsewhere
    mlm_positions: Tensor | None = None  # (B, P) the chosen positions, where the output layer runs (prediction_slots)
    mlm_targets: Tensor | None = None  # (B, P) mlm_labels at mlm_positions, IGNORE in unused slots
    sbo_left: Tensor | None = None  # (B, P) SpanBERT's span boundary objective at the slots: the span's left boundary,
    sbo_right: Tensor | None = None  # (B, P) its right boundary,
    sbo_offset: Tensor | None = None  # (B, P) the token's place in its span,
    sbo_targets: Tensor | None = None  # (B, P) the original id of each span token, IGNORE elsewhere


def collate(
    pairs: Sequence[Pair], *, cls_id: int, sep_id: int, pad_id: int, special_ids: Sequence[int], with_labels: bool
) -> PretrainingBatch:
    """Lay out pairs as ``[CLS] A [SEP] B [SEP]`` rows padded to the longest; tokens in ``special_ids`` ([UNK] too) are not maskable."""
    rows, segments, starts = [], [], []
    for p in pairs:
        b = [*p.b, sep_id] if p.b else []
        rows.append([cls_id, *p.a, sep_id, *b])
        segments.append([0] * (len(p.a) + 2) + [1] * len(b))
        # specials and padding count as words of their own
        starts.append([1, *map(int, p.a_starts), 1, *(map(int, p.b_starts) if p.b else ()), *([1] if p.b else [])])
    ids, mask = pad(rows, pad_id, return_mask=True)  # (B, T)
    seg = pad(segments, 0)  # (B, T)
    maskable = mask & ~torch.isin(ids, torch.tensor(list(special_ids), dtype=torch.long))  # (B, T)
    word_index = torch.cumsum(pad(starts, 1), dim=1) - 1  # (B, T)
    labels = torch.tensor([p.label for p in pairs], dtype=torch.long) if with_labels else None
    return PretrainingBatch(ids, seg, mask.long(), maskable, word_index, labels)


def split_documents(docs: list[Document], valid_fraction: float) -> tuple[list[Document], list[int], list[int]]:
    """Hold out the last ``valid_fraction`` of the documents (at least one, keeping one to train).

    A single document is first cut in two at a sentence boundary (90/10 by sentences, or
    ``valid_fraction`` of them if larger). Returns ``(documents, train ids, held-out ids)``.

    Raises:
        DataError: one document of one sentence: nothing to hold out.
    """
    if len(docs) == 1:
        doc = docs[0]
        if len(doc) < 2:
            raise DataError("the text is a single sentence; pretraining needs more text (at least two sentences)")
        n_valid = min(len(doc) - 1, max(1, round(len(doc) * max(valid_fraction, 0.1))))
        docs = [doc[: len(doc) - n_valid], doc[len(doc) - n_valid :]]
    n_valid = min(len(docs) - 1, max(1, round(len(docs) * valid_fraction)))
    ids = list(range(len(docs)))
    return docs, ids[: len(docs) - n_valid], ids[len(docs) - n_valid :]
