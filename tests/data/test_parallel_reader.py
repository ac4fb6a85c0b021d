"""Parallel-corpus reading and the joint subword tokenizer, on real Multi30k sentences."""

from __future__ import annotations

import gzip

import pytest

from attnkit.data.parallel import read_lines, read_parallel
from attnkit.data.subword import train_subword_tokenizer
from attnkit.data.tokenizer import SPECIALS
from attnkit.errors import DataError


def write(path, lines, *, gz=None):
    text = "".join(line + "\n" for line in lines)
    if gz if gz is not None else path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def test_reads_multi30k_sample(multi30k_sample):
    c = read_parallel(multi30k_sample, "train", "de", "en")
    assert len(c) == 300 and len(c.src) == len(c.tgt)
    assert c.src[0].startswith("Zwei junge weiße Männer") and c.tgt[0].startswith("Two young, White males")
    assert read_parallel(multi30k_sample, "val", "en", "de", limit=7).src == read_parallel(multi30k_sample, "val", "de", "en").tgt[:7]


def test_plain_and_gzip_read_the_same(tmp_path):
    lines = ["Ein Mann.", "", "  zwei  Leerzeichen ", "Ümlaut ß"]
    write(tmp_path / "a.txt", lines)
    write(tmp_path / "a.gz", lines)
    assert read_lines(tmp_path / "a.txt") == read_lines(tmp_path / "a.gz") == lines
    (tmp_path / "crlf.txt").write_bytes(b"eins\r\nzwei\r\n")
    assert read_lines(tmp_path / "crlf.txt") == ["eins", "zwei"]
    # Unicode line separators inside a sentence do not split it (that would break the alignment).
    write(tmp_path / "sep.gz", ["a\u2028b", "c\x85d\x0ce"])
    assert read_lines(tmp_path / "sep.gz") == ["a\u2028b", "c\x85d\x0ce"]


def test_plain_files_are_found_without_gz(tmp_path):
    write(tmp_path / "train.de", ["Hallo Welt."])
    write(tmp_path / "train.en", ["Hello world."])
    assert read_parallel(tmp_path, "train", "de", "en").tgt == ["Hello world."]


def test_mismatched_line_counts_name_both_files(tmp_path):
    write(tmp_path / "train.de.gz", ["a", "b", "c"])
    write(tmp_path / "train.en.gz", ["a", "b"])
    with pytest.raises(DataError, match=r"train\.de\.gz has 3 lines but .*train\.en\.gz has 2"):
        read_parallel(tmp_path, "train", "de", "en")


def test_empty_file_is_named(tmp_path):
    write(tmp_path / "train.de.gz", ["a"])
    write(tmp_path / "train.en.gz", [])
    with pytest.raises(DataError, match=r"train\.en\.gz is empty"):
        read_parallel(tmp_path, "train", "de", "en")
    write(tmp_path / "val.de", ["", " "])
    write(tmp_path / "val.en", ["x", "y"])
    with pytest.raises(DataError, match=r"val\.de is empty"):
        read_parallel(tmp_path, "val", "de", "en")


def test_unknown_language_lists_the_known_ones(multi30k_sample):
    with pytest.raises(DataError, match=r"no train\.fr or train\.fr\.gz: the 'train' split exists for de, en only"):
        read_parallel(multi30k_sample, "train", "fr", "en")


def test_missing_split_lists_the_splits(multi30k_sample):
    with pytest.raises(DataError, match=r"no 'test_2017' split\); splits found: test_2016_flickr, train, val"):
        read_parallel(multi30k_sample, "test_2017", "de", "en")


def test_missing_directory_and_same_language(tmp_path):
    with pytest.raises(DataError, match=r"data directory .*nope does not exist"):
        read_parallel(tmp_path / "nope", "train", "de", "en")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"data directory .*file is not a directory"):
        read_parallel(tmp_path / "file", "train", "de", "en")
    with pytest.raises(DataError, match="both 'de'"):
        read_parallel(tmp_path, "train", "de", "de")


def test_corrupt_gzip_and_bad_encoding(tmp_path):
    (tmp_path / "train.de.gz").write_text("not gzip at all\n")
    with pytest.raises(DataError, match=r"train\.de\.gz cannot be read as gzip"):
        read_lines(tmp_path / "train.de.gz")
    (tmp_path / "latin1.txt").write_bytes("Übung\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_lines(tmp_path / "latin1.txt")


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_tokenizer_round_trips_real_sentences(multi30k_sample, kind):
    c = read_parallel(multi30k_sample, "train", "de", "en")
    tok = train_subword_tokenizer(c.src + c.tgt, 500, kind)
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    assert tok.get_vocab_size() <= 500
    val = read_parallel(multi30k_sample, "val", "de", "en")
    # Unseen sentences too: every character of val also occurs in train except a few, which become <unk>.
    seen = set("".join(c.src + c.tgt))
    for s in c.src[:100] + c.tgt[:100] + [v for v in val.src + val.tgt if set(v) <= seen]:
        ids = tok.encode(s).ids
        assert 3 not in ids  # nothing unknown
        assert 1 not in ids and 2 not in ids  # no BOS/EOS: the model's collate adds them
        assert tok.decode(ids) == s
    # Punctuation is split from words, yet spacing comes back exactly; printable ASCII is
    # never unknown, even where the 300 training pairs have no brackets or quotes.
    text = 'Ein Mann (links), "zwei" Hunde & 3 Katzen.'
    assert 3 not in tok.encode(text).ids
    assert tok.decode(tok.encode(text).ids) == text


def test_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="vocab_size=10 is too small"):
        train_subword_tokenizer(["a b"], 10)
    with pytest.raises(DataError, match="every training sentence is empty"):
        train_subword_tokenizer(["", "  "], 200)
    with pytest.raises(DataError, match="kind 'wordpiece'"):
        train_subword_tokenizer(["a"], 200, "wordpiece")  # type: ignore[arg-type]
