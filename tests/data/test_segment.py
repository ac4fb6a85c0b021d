"""Chinese whole-word masking (Cui et al. 2019): words from a segmenter, every character of a chosen word masked."""

from __future__ import annotations

import random

import pytest
import torch

from attnkit.data.pretraining import collate, make_pairs, tokenize_documents
from attnkit.data.segment import segmented_starts, word_boundaries
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.objectives.mlm import IGNORE, MaskingConfig, mask_tokens

jieba = pytest.importorskip("jieba")

SENTENCES = ["使用语言模型来预测下一个词的概率", "我们在北京大学学习自然语言处理", "今天天气很好我们去公园散步吧"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> WordPieceTokenizer:
    path = tmp_path_factory.mktemp("zh") / "zh.txt"
    path.write_text("\n".join(SENTENCES * 3) + "\n")
    return WordPieceTokenizer.train([path], vocab_size=200)


def jieba_words(text: str) -> list[str]:
    return list(jieba.cut(text))


def test_a_token_begins_a_word_exactly_where_jieba_starts_one(tok):
    for text in SENTENCES:
        enc = tok.tokenizer.encode(text, add_special_tokens=False)
        assert len(enc.ids) == len(text)  # BERT's tokenizer: one token per Chinese character
        starts = segmented_starts(text, enc.offsets, "jieba")
        want = [s for w in jieba_words(text) for s in [True] + [False] * (len(w) - 1)]  # the reference: jieba's own words
        assert starts == want
    assert word_boundaries("深度 学习 模型", "spaces") == {0, 3, 6}


def test_whole_word_masking_masks_every_character_of_a_chosen_jieba_word(tok):
    docs = tokenize_documents([SENTENCES[:2], SENTENCES[2:]], tok, "jieba")
    plain = tokenize_documents([SENTENCES[:2], SENTENCES[2:]], tok)
    assert all(all(s.starts) for d in plain for s in d)  # without a segmenter every character is a word of its own
    pairs = make_pairs(docs, max_seq_len=64, rng=random.Random(0))
    b = collate(pairs, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id, special_ids=tok.special_ids, with_labels=False)
    chosen_words = 0
    for seed in range(20):
        _, labels = mask_tokens(b.ids, b.maskable, mask_id=tok.mask_id, random_ids=tok.random_ids(),
                                config=MaskingConfig(whole_word=True, select_prob=0.3), word_ids=b.word_index,
                                generator=torch.Generator().manual_seed(seed))
        picked = labels != IGNORE
        for r in range(b.ids.shape[0]):
            for w in b.word_index[r][picked[r]].unique():
                word = (b.word_index[r] == w) & b.maskable[r]
                assert picked[r][word].all()  # the whole word, every character
                chosen_words += int(word.sum() > 1)
    assert chosen_words > 0  # some chosen words had several characters


def test_the_segmenter_reaches_train_mlm(tmp_path, capsys):
    import json

    from attnkit.cli.main import main

    (tmp_path / "zh.txt").write_text("\n\n".join("\n".join(SENTENCES[i:] + SENTENCES[:i]) for i in range(3)) * 4 + "\n")
    (tmp_path / "entities.txt").write_text("北京大学\n自然语言处理\n")
    code = main(["train", "mlm", "--text", str(tmp_path / "zh.txt"), "--whole-word", "--segmenter", "jieba", "--vocab-size", "120",
                 "--phrases", str(tmp_path / "entities.txt"),
                 "--max-seq-len", "32", "--out", str(tmp_path / "r"), "--no-progress", "--set", "model.n_layers=1", "--set",
                 "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.d_ff=32", "--set", "train.steps=4", "--set",
                 "train.schedule.warmup=1", "--set", "train.eval.every=2", "--set", "train.batch_size=4"])
    _, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads((tmp_path / "r" / "run_config.json").read_text())["data"]
    assert data["segmenter"] == "jieba" and data["phrases"] == str(tmp_path / "entities.txt")


def test_phrase_lexicon_units_are_masked_whole(tmp_path):
    """ERNIE's phrase and entity masking from a lexicon: each occurrence one unit, the longest first, at word edges only."""
    from attnkit.data.segment import PhraseLexicon

    lex = PhraseLexicon(["New York", "York", "machine learning", "北京大学"])
    text = "I love new  york and Machine Learning, not newyork; 我们在北京大学学习"
    assert [text[a:b] for a, b in lex.spans(text)] == ["new  york", "Machine Learning", "北京大学"]
    words = ["i", "love", "new", "york", "and", "machine", "learning", "."]
    (tmp_path / "v.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s"]) + "\n")
    tok = WordPieceTokenizer.from_file(tmp_path / "v.txt")
    sentence = "i love new york and machine learning ."
    enc = tok.tokenizer.encode(sentence, add_special_tokens=False)
    starts = lex.merge(sentence, enc.offsets, [True] * len(enc.ids))
    assert starts == [True, True, True, False, True, True, False, True]  # "new york", "machine learning": one unit each
    docs = tokenize_documents([[sentence, sentence]], tok, phrases=lex)
    assert docs[0][0].starts == starts
    with pytest.raises(Exception, match="does not exist"):
        PhraseLexicon.from_file(tmp_path / "missing.txt")
