"""GLUE .tsv and CoNLL readers, sub-word label alignment, truncation and length-bucketed batches."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnkit.data.conll import TaggedSentences, check_tags, read_conll, write_conll
from attnkit.data.glue import ClassificationData, check_labels, read_classification_tsv, read_sentences
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.errors import DataError
from attnkit.training import finetune as ft

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "new", "york", "play", "##ing", "i", "love", "in", "the", "park", "."]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> WordPieceTokenizer:
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return WordPieceTokenizer.from_vocab(path)


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_sst2_slice(tmp_path):
    lines = shared("sst2", "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:65]
    (tmp_path / "sst.tsv").write_text("".join(lines))
    data = read_classification_tsv(tmp_path / "sst.tsv")
    assert len(data) == 64 and data.pairs is None
    assert data.texts[0] == "hide new secretions from the parental units"  # GLUE's trailing space stripped
    assert data.label_names() == ("0", "1")


def test_rte_dev_with_unbalanced_quotes():
    data = read_classification_tsv(shared("rte", "dev.tsv"))
    assert len(data) == 277 and data.pairs is not None and len(data.pairs) == 277
    assert data.label_names() == ("entailment", "not_entailment")
    assert sum(x == "entailment" for x in data.labels) == 146
    assert any('"' in t for t in data.texts + data.pairs)


def test_wnut17_files_read_completely():
    train = read_conll(shared("wnut17", "wnut17train.conll"))  # blank lines there are "\t"
    assert len(train) == 3394 and sum(map(len, train.tokens)) == 62730
    assert train.tag_names()[0] == "O" and len(train.tag_names()) == 13
    test = read_conll(shared("wnut17", "emerging.test.annotated"))
    assert len(test) == 1287 and sum(map(len, test.tokens)) == 23394
    check_tags(train.tag_names(), test)


def test_tsv_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("sentence\tlabel\nfine\t1\nno label here\n")
    with pytest.raises(DataError, match=r"bad\.tsv:3"):
        read_classification_tsv(bad)
    bad.write_text("text\tlabel\na\t1\n")
    with pytest.raises(DataError, match="header"):
        read_classification_tsv(bad)
    with pytest.raises(DataError, match="does not exist"):
        read_classification_tsv(tmp_path / "missing.tsv")


def test_unseen_labels_are_listed(tmp_path):
    dev = ClassificationData(["a", "b", "c"], None, ["pos", "meh", "odd"], "dev.tsv")
    with pytest.raises(DataError, match=r"dev.tsv.*'meh', 'odd'"):
        check_labels(["neg", "pos"], dev)
    with pytest.raises(DataError, match=r"'B-new'"):
        check_tags(["O", "B-PER"], TaggedSentences([["x"]], [["B-new"]], "dev.conll"))


def test_conll_errors_name_file_and_line(tmp_path):
    f = tmp_path / "x.conll"
    f.write_text("New\tB-LOC\nYork\tI-LOC\n\nbroken\n")
    with pytest.raises(DataError, match=r"x\.conll:4"):
        read_conll(f)
    f.write_text("New\tB-LOC\nYork\tX-LOC\n")
    with pytest.raises(DataError, match=r"x\.conll:2"):
        read_conll(f)


def test_non_utf8_files_are_data_errors(tmp_path):
    (tmp_path / "l1.tsv").write_bytes("sentence\tlabel\ncafé\t1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"l1\.tsv is not UTF-8 text"):
        read_classification_tsv(tmp_path / "l1.tsv")
    (tmp_path / "l1.conll").write_bytes("café\tO\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"l1\.conll is not UTF-8 text"):
        read_conll(tmp_path / "l1.conll")


def test_conll_round_trip(tmp_path):
    f = tmp_path / "x.conll"
    f.write_text("-DOCSTART-\tO\n\nNew\tB-LOC\nYork\tI-LOC\n\t\n\t\nhi\tO\n")
    data = read_conll(f)
    assert data.tokens == [["New", "York"], ["hi"]] and data.tags == [["B-LOC", "I-LOC"], ["O"]]
    assert write_conll(data.tokens, data.tags) == "New\tB-LOC\nYork\tI-LOC\n\nhi\tO\n\n"


def test_read_sentences():
    assert read_sentences(["a b", "", "c"]) == (["a b", "c"], None)
    assert read_sentences(["a\tb", "c\td"]) == (["a", "c"], ["b", "d"])
    with pytest.raises(DataError, match="pairs"):
        read_sentences(["a\tb", "c"])


def test_tag_on_first_subword_only(tok):
    data = TaggedSentences([["i", "love", "playing", "in", "new", "york"]], [["O", "O", "B-act", "O", "B-LOC", "I-LOC"]])
    tags = ["O", "B-act", "B-LOC", "I-LOC"]
    enc = ft.encode_tagging(tok, data, tags, 32)
    pieces = [VOCAB[i] for i in enc.ids[0]]
    assert pieces == ["[CLS]", "i", "love", "play", "##ing", "in", "new", "york", "[SEP]"]
    assert enc.targets[0] == [-100, 0, 0, 1, -100, 0, 2, 3, -100]


def test_truncation_is_counted_and_cut_words_get_O(tok):
    data = TaggedSentences([["i", "love", "new", "york"], ["i"]], [["O", "O", "B-LOC", "I-LOC"], ["O"]])
    enc = ft.encode_tagging(tok, data, ["O", "B-LOC", "I-LOC"], 4)  # room for two words
    assert enc.truncated == 1 and max(enc.lengths()) == 4
    import torch

    logits = [torch.tensor([[0.0, 0, 0]] + [[0.0, 5, 0]] * (len(r) - 1)) for r in enc.ids]  # everything B-LOC
    assert ft.word_tags(logits, enc.word_ids, [4, 1], ["O", "B-LOC", "I-LOC"]) == [["B-LOC", "B-LOC", "O", "O"], ["B-LOC"]]


def test_pairs_have_segments(tok):
    data = ClassificationData(["i love new york"], ["the park"], ["yes"])
    enc = ft.encode_classification(tok, data, ["no", "yes"], 64)
    assert enc.segments[0] == [0] * 6 + [1] * 3 and enc.targets == [1]
    enc = ft.encode_classification(tok, ClassificationData(["i love new york " * 40], ["the park " * 40], ["no"]), ["no", "yes"], 16)
    assert enc.truncated == 1 and enc.lengths() == [16]


def test_bucketed_batches_cover_everything_with_little_padding():
    import random

    rng = random.Random(1)
    lengths = [rng.randint(3, 120) for _ in range(1000)]
    batches = ft.bucketed_batches(lengths, 16, bucket_size=20, seed=3, epoch=1)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == ft.bucketed_batches(lengths, 16, bucket_size=20, seed=3, epoch=1)
    assert batches != ft.bucketed_batches(lengths, 16, bucket_size=20, seed=3, epoch=2)

    def padded(bs):
        return sum(len(b) * max(lengths[i] for i in b) for b in bs)

    unsorted = ft.bucketed_batches(lengths, 16, bucket_size=1, seed=3)  # chunks of one batch: no sorting across batches
    assert padded(batches) < 1.1 * sum(lengths) < padded(unsorted)
    collated = ft.collate(ft.Encoded([[2, 5, 3], [2, 3]], [[0] * 3, [0] * 2], [1, 0], [[None] * 3, [None] * 2], 0), [1, 0], pad_id=0)
    assert collated.ids.tolist() == [[2, 3, 0], [2, 5, 3]] and collated.attention_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
