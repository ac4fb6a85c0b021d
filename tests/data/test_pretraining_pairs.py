"""BERT pretraining pairs: NSP/SOP label statistics and provenance, packing limits, batch layout, document reading.

The reference for every pair is the document it came from: a segment must equal the
concatenation of the sentences its span names.
"""

from __future__ import annotations

import math
import random

import pytest
import torch

from attnkit.data.pretraining import (
    Sentence, collate, cut_long_sentences, last_word_start, make_pairs, read_documents, split_documents, split_sentences,
)
from attnkit.errors import DataError

CLS, SEP, PAD, UNK = 2, 3, 0, 1


def synthetic_docs(n_docs: int, seed: int = 0, max_len: int = 14) -> list[list[Sentence]]:
    """Documents of 1-12 sentences of 1-``max_len`` tokens; words of 1-3 pieces; ids unique per (doc, sentence, token)."""
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        doc = []
        for s in range(rng.randint(1, 12)):
            n = rng.randint(1, max_len)
            starts = [True] + [rng.random() < 0.6 for _ in range(n - 1)]
            doc.append(Sentence([10 + (d * 100 + s) * 100 + t for t in range(n)], starts))
        docs.append(doc)
    return docs


def joined(docs, span):
    d, lo, hi = span
    return [t for s in docs[d][lo:hi] for t in s.ids], [f for s in docs[d][lo:hi] for f in s.starts]


def within(p_hat: float, n: int, p: float = 0.5) -> bool:
    """|p_hat - p| below 5 standard errors of a binomial proportion."""
    return abs(p_hat - p) < 5 * math.sqrt(p * (1 - p) / n)


@pytest.fixture(scope="module")
def docs():
    return [cut_long_sentences(d, (64 - 3) // 2) for d in synthetic_docs(3000)]


@pytest.mark.parametrize("max_seq_len", [16, 64])
def test_nsp_labels_are_balanced_and_notnext_comes_from_another_document(max_seq_len):
    docs = [cut_long_sentences(d, (max_seq_len - 3) // 2) for d in synthetic_docs(1500, seed=max_seq_len)]
    pairs = make_pairs(docs, max_seq_len=max_seq_len, pair_task="nsp", rng=random.Random(1))
    assert len(pairs) > 2000
    not_next = sum(p.label for p in pairs)
    assert within(not_next / len(pairs), len(pairs))
    for p in pairs:
        assert p.a and p.b and len(p) <= max_seq_len
        assert p.a == joined(docs, p.a_span)[0]  # A: whole sentences, untouched
        b, b_starts = joined(docs, p.b_span)
        if p.label == 0:  # IsNext: B follows A directly in the same document
            assert p.b_span[0] == p.a_span[0] and p.b_span[1] == p.a_span[2] and p.b == b and not p.b_truncated
        else:  # NotNext: another document, B possibly cut at its end, at a word start
            assert p.b_span[0] != p.a_span[0]
            assert p.b == b[: len(p.b)] and (len(p.b) == len(b)) != p.b_truncated
            if p.b_truncated:
                assert b_starts[len(p.b)] or not any(b_starts[1 : len(p.b) + 1])


def test_sop_swaps_exactly_the_flagged_pairs(docs):
    pairs = make_pairs(docs, max_seq_len=64, pair_task="sop", rng=random.Random(2))
    assert within(sum(p.label for p in pairs) / len(pairs), len(pairs))
    for p in pairs:
        assert p.a_span[0] == p.b_span[0] and len(p) <= 64
        assert p.a == joined(docs, p.a_span)[0] and p.b == joined(docs, p.b_span)[0]
        if p.label == 1:  # swapped: the first segment is the one that comes later in the document
            assert p.a_span[1] == p.b_span[2]
        else:
            assert p.a_span[2] == p.b_span[1]


def test_sentence_structural_pairs_are_next_previous_or_random_a_third_each(docs):
    """StructBERT (Wang et al. 2020, section 2.2): B follows A (0), B precedes A (1), B from another document (2)."""
    pairs = make_pairs(docs, max_seq_len=64, pair_task="sso", rng=random.Random(4))
    n = len(pairs)
    assert n > 2000
    for label in (0, 1, 2):
        assert within(sum(p.label == label for p in pairs) / n, n, 1 / 3), label
    for p in pairs:
        assert p.a and p.b and len(p) <= 64 and p.a == joined(docs, p.a_span)[0]
        if p.label == 0:  # next: B starts where A ends, in the same document
            assert p.b_span[0] == p.a_span[0] and p.b_span[1] == p.a_span[2] and p.b == joined(docs, p.b_span)[0]
        elif p.label == 1:  # previous: B ends where A starts
            assert p.b_span[0] == p.a_span[0] and p.b_span[2] == p.a_span[1] and p.b == joined(docs, p.b_span)[0]
        else:  # random: another document, as NSP's NotNext
            assert p.label == 2 and p.b_span[0] != p.a_span[0]
            assert p.b == joined(docs, p.b_span)[0][: len(p.b)]
    with pytest.raises(DataError, match="sentence structural objective needs at least two documents"):
        make_pairs(docs[:1], max_seq_len=64, pair_task="sso", rng=random.Random(0))


def test_pairs_cover_documents_in_order_and_drop_nothing_but_lone_sentences(docs):
    """IsNext/SOP chunks tile each document; only one-sentence documents give no pair."""
    pairs = make_pairs(docs, max_seq_len=64, pair_task="sop", rng=random.Random(3))
    covered: dict[int, list[tuple[int, int]]] = {}
    for p in pairs:
        lo, hi = min(p.a_span[1], p.b_span[1]), max(p.a_span[2], p.b_span[2])
        covered.setdefault(p.a_span[0], []).append((lo, hi))
    for d, doc in enumerate(docs):
        spans = covered.get(d, [])
        if len(doc) == 1:
            assert not spans
            continue
        assert spans[0][0] == 0
        if spans[-1][1] != len(doc):  # a last sentence is lost only when it fits neither with its chunk nor with a partner
            lo, hi = spans[-1]
            assert hi == len(doc) - 1 and hi - lo == 2 and sum(len(s.ids) for s in doc[lo:]) > 64 - 3
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous, no sentence lost, none left alone
        assert all(hi - lo >= 2 for lo, hi in spans)


def test_no_pair_task_packs_whole_sentences_into_one_segment(docs):
    pairs = make_pairs(docs, max_seq_len=64, pair_task="none", rng=random.Random(4))
    assert all(not p.b and p.label == -1 and len(p) <= 64 for p in pairs)
    assert all(p.a == joined(docs, p.a_span)[0] for p in pairs)
    assert sum(len(p.a) for p in pairs) == sum(len(s.ids) for d in docs for s in d)  # every token used once
    full = [len(p) for p in pairs if p.a_span[2] < len(docs[p.a_span[0]])]  # not at a document's end
    assert sum(full) / len(full) > 0.7 * 64  # sequences are packed, not one sentence each


def test_short_sequences_follow_short_seq_prob(docs):
    long_ = make_pairs(docs, max_seq_len=64, pair_task="none", short_seq_prob=0.0, rng=random.Random(5))
    short = make_pairs(docs, max_seq_len=64, pair_task="none", short_seq_prob=1.0, rng=random.Random(5))
    assert len(short) > 1.3 * len(long_)


def test_pairs_are_reproducible_from_the_seed(docs):
    a = make_pairs(docs[:200], max_seq_len=64, pair_task="nsp", rng=random.Random(7))
    b = make_pairs(docs[:200], max_seq_len=64, pair_task="nsp", rng=random.Random(7))
    c = make_pairs(docs[:200], max_seq_len=64, pair_task="nsp", rng=random.Random(8))
    assert a == b and a != c


def test_nsp_needs_two_documents():
    with pytest.raises(DataError, match="at least two documents"):
        make_pairs(synthetic_docs(1), max_seq_len=32, pair_task="nsp", rng=random.Random(0))


def test_long_sentences_are_cut_at_word_starts():
    starts = [True, False, False, True, False, True, True, False, False, False, True, False]
    s = Sentence(list(range(12)), starts)
    pieces = cut_long_sentences([s], 5)
    assert [p.ids for p in pieces] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]  # token 5 and 10 start words
    assert all(p.starts[0] for p in pieces[:2]) and all(len(p.ids) <= 5 for p in pieces)
    # a word longer than the limit has no start inside: cut at the limit
    assert [p.ids for p in cut_long_sentences([Sentence(list(range(7)), [True] + [False] * 6)], 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert last_word_start([True, False, True], 5) == 2


def test_collate_lays_out_cls_a_sep_b_sep():
    docs = synthetic_docs(50, seed=3)
    pairs = make_pairs(docs, max_seq_len=40, pair_task="nsp", rng=random.Random(0))[:8]
    pairs[0].a[0] = UNK  # [UNK] is never masked
    b = collate(pairs, cls_id=CLS, sep_id=SEP, pad_id=PAD, special_ids=[PAD, UNK, CLS, SEP, 4], with_labels=True)
    assert b.ids.shape == (8, max(len(p) for p in pairs))
    for r, p in enumerate(pairs):
        row = [CLS, *p.a, SEP, *p.b, SEP]
        n = len(row)
        assert b.ids[r, :n].tolist() == row and (b.ids[r, n:] == PAD).all()
        assert b.segment_ids[r, :n].tolist() == [0] * (len(p.a) + 2) + [1] * (len(p.b) + 1)
        assert b.attention_mask[r].sum() == n
        assert b.maskable[r].tolist() == [t not in (PAD, UNK, CLS, SEP) and i < n for i, t in enumerate(b.ids[r].tolist())]
        starts = [True] + p.a_starts + [True] + p.b_starts + [True]
        words = b.word_index[r, :n].tolist()
        assert words == [sum(starts[: i + 1]) - 1 for i in range(n)]  # a new number exactly at each word start
    assert b.pair_labels.tolist() == [p.label for p in pairs]
    assert collate(pairs, cls_id=CLS, sep_id=SEP, pad_id=PAD, special_ids=[], with_labels=False).pair_labels is None


def test_read_documents(tmp_path):
    (tmp_path / "a.txt").write_text("Title one\nFirst. Second!\n\n  \n\nOther doc\n\n\nThird doc line\n")
    (tmp_path / "b.txt").write_text("Only para\n\nstill same file\n")
    assert read_documents([tmp_path / "a.txt"]) == [["Title one", "First. Second!"], ["Other doc"], ["Third doc line"]]
    assert read_documents([tmp_path / "a.txt"], sentences="punct")[0] == ["Title one", "First.", "Second!"]
    assert read_documents([tmp_path / "a.txt", tmp_path / "b.txt"], documents="files")[1] == ["Only para", "still same file"]
    assert split_sentences("Is it? Yes. no", "punct") == ["Is it?", "Yes.", "no"]
    (tmp_path / "empty.txt").write_text("\n \n\n")
    with pytest.raises(DataError, match="is empty"):
        read_documents([tmp_path / "empty.txt"])
    with pytest.raises(DataError, match="does not exist"):
        read_documents([tmp_path / "missing.txt"])


def test_gzipped_text_reads_as_its_plain_copy(tmp_path):
    """A ``.gz`` file (written by Python's gzip) gives the documents of the same text stored plain, also through
    ``data.text`` of masked LM and ELECTRA (:func:`attnkit.runs.mlm.read_text`)."""
    import gzip

    from attnkit.runs.mlm import MLMDataConfig, read_text

    text = "A man rides a horse.\r\nTwo dogs play.\n\nA new paragraph. Its second sentence.\n"
    (tmp_path / "plain.en").write_text(text.replace("\r\n", "\n"), encoding="utf-8")
    (tmp_path / "train.en.gz").write_bytes(gzip.compress(text.encode("utf-8")))
    for how in ("lines", "punct"):
        assert read_documents([tmp_path / "train.en.gz"], sentences=how) == read_documents([tmp_path / "plain.en"], sentences=how)
    assert read_documents([tmp_path / "train.en.gz"]) == [["A man rides a horse.", "Two dogs play."], ["A new paragraph. Its second sentence."]]
    assert read_text(MLMDataConfig(text=(str(tmp_path / "train.en.gz"),))) == read_documents([tmp_path / "plain.en"])
    (tmp_path / "bad.gz").write_bytes(b"plain text named .gz")
    with pytest.raises(DataError, match="cannot be read as gzip"):
        read_documents([tmp_path / "bad.gz"])
    (tmp_path / "latin1.gz").write_bytes(gzip.compress("caf\xe9".encode("latin-1")))
    with pytest.raises(DataError, match="is not UTF-8"):
        read_documents([tmp_path / "latin1.gz"])
    (tmp_path / "blank.gz").write_bytes(gzip.compress(b"\n\n"))
    with pytest.raises(DataError, match="is empty"):
        read_documents([tmp_path / "blank.gz"])


def test_split_documents_holds_out_the_last_ones():
    docs = synthetic_docs(40)
    out, train, valid = split_documents(docs, 0.1)
    assert out is docs and train == list(range(36)) and valid == [36, 37, 38, 39]
    one = [[Sentence([5 + i], [True]) for i in range(20)]]
    out, train, valid = split_documents(one, 0.05)
    assert len(out) == 2 and [len(d) for d in out] == [18, 2] and (train, valid) == ([0], [1])
    with pytest.raises(DataError, match="single sentence"):
        split_documents([[Sentence([5], [True])]], 0.1)


def test_masking_a_batch_only_touches_maskable_tokens():
    """The batch's maskable/word_index feed objectives.mlm.mask_tokens; specials and padding never change."""
    from attnkit.objectives.mlm import IGNORE, MaskingConfig, mask_tokens

    docs = synthetic_docs(200, seed=5)
    pairs = make_pairs(docs, max_seq_len=48, pair_task="sop", rng=random.Random(0))[:64]
    b = collate(pairs, cls_id=CLS, sep_id=SEP, pad_id=PAD, special_ids=[PAD, UNK, CLS, SEP, 4], with_labels=True)
    for whole_word in (False, True):
        inputs, labels = mask_tokens(b.ids, b.maskable, mask_id=4, random_ids=torch.arange(5, 50),
                                     config=MaskingConfig(whole_word=whole_word), word_ids=b.word_index,
                                     generator=torch.Generator().manual_seed(0))
        assert (inputs[~b.maskable] == b.ids[~b.maskable]).all() and (labels[~b.maskable] == IGNORE).all()
        assert 0.1 < (labels != IGNORE).sum() / b.maskable.sum() < 0.2
        if whole_word:  # every piece of a chosen word is chosen
            chosen = labels != IGNORE
            for r in range(len(pairs)):
                for w in b.word_index[r][chosen[r]].unique():
                    assert chosen[r][(b.word_index[r] == w) & b.maskable[r]].all()
