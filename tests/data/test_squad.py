"""SQuAD data, windows, answer extraction and the official metrics, against hand-computed values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnkit.data.squad import (
    QAExample, char_to_token_span, make_windows, max_context, read_squad, split_articles, window_starts,
)
from attnkit.metrics import exact_match, f1, normalize_answer, squad_scores
from attnkit.data.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
from attnkit.errors import ConfigError, DataError
from attnkit.training.qa import extract_answers

XQUAD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "squad" / "xquad.en.json"

# -- metrics ------------------------------------------------------------------------------


def test_normalize_answer():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("Theatre and thereafter") == "theatre and thereafter"  # articles only as whole words
    assert normalize_answer("U.S.-based") == "usbased"  # punctuation removed, not replaced by spaces
    assert normalize_answer("  A\tthe\n") == ""


def test_exact_match_and_f1_hand_computed():
    assert exact_match("Denver Broncos.", "the denver broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0
    # pred {cat, sat}, gold {cat, sat, on, mat}: P = 1, R = 1/2, F1 = 2/3
    assert f1("the cat sat", "a cat sat on the mat") == pytest.approx(2 / 3)
    # bags, not sets: pred {cat x3}, gold {cat}: common 1, P = 1/3, R = 1, F1 = 1/2
    assert f1("cat cat cat", "cat") == pytest.approx(0.5)
    # pred {1990s, and, 2000s}, gold {1990s}: P = 1/3, R = 1 -> 1/2
    assert f1("1990s and 2000s", "1990s") == pytest.approx(0.5)
    assert f1("Paris", "London") == 0.0
    assert f1("", "London") == 0.0
    assert exact_match("the", "a") == 1.0 and f1("the", "a") == 0.0  # v1.1: empty bags give F1 0


def test_squad_scores_max_over_gold_and_missing():
    golds = {"q1": ["Denver Broncos", "Broncos"], "q2": ["cat sat on the mat"], "q3": ["x"]}
    preds = {"q1": "broncos", "q2": "the cat sat"}  # q3 has no prediction: 0
    s = squad_scores(preds, golds)
    # q1: EM 1 (second gold), F1 1; q2: EM 0, F1 = P 1, R 2/4 -> 2/3; q3: 0
    assert s["exact_match"] == pytest.approx(100 / 3)
    assert s["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert s["missing"] == 1


# -- reading ------------------------------------------------------------------------------


def squad_file(tmp_path: Path, articles: list[dict]) -> Path:
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": articles}))
    return path


def article(title: str, context: str, qas: list[tuple[str, list[tuple[str, int]]]]) -> dict:
    return {"title": title, "paragraphs": [{"context": context, "qas": [
        {"id": f"{title}-{i}", "question": q, "answers": [{"text": t, "answer_start": s} for t, s in answers]}
        for i, (q, answers) in enumerate(qas)
    ]}]}


def test_read_squad_skips_and_counts_bad_offsets(tmp_path):
    ctx = "Denver beat Carolina in Santa Clara."
    path = squad_file(tmp_path, [article("A", ctx, [
        ("who won?", [("Denver", 0), ("Denver", 3)]),  # one good, one bad offset
        ("where?", [("Santa Clara", 5)]),  # only a bad one: the question is skipped
        ("who lost?", [("Carolina", 12)]),
    ])])
    data = read_squad(path)
    assert [e.id for e in data.examples] == ["A-0", "A-2"]
    assert data.examples[0].answers == [("Denver", 0)]
    assert data.bad_answers == 2 and data.skipped_questions == 1
    assert "2 answers whose offsets do not match the context skipped" in data.report()


def test_read_squad_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_squad(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_squad(tmp_path / "bad.json")
    (tmp_path / "odd.json").write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"qas": []}]}]}))
    with pytest.raises(DataError, match=r"data\[0\].paragraphs\[0\]: missing 'context'"):
        read_squad(tmp_path / "odd.json")


def test_split_articles(tmp_path):
    arts = [article(t, f"{t} is here.", [("what?", [(t, 0)])]) for t in ("A", "B", "C")]
    train, dev = split_articles(squad_file(tmp_path, arts), 1)
    assert train.articles == ["A", "B"] and dev.articles == ["C"]
    assert [e.id for e in dev.examples] == ["C-0"]
    with pytest.raises(ConfigError, match="split_articles=3"):
        split_articles(tmp_path / "squad.json", 3)


@pytest.mark.skipif(not XQUAD.is_file(), reason=f"{XQUAD} not found")
def test_xquad_reads_whole():
    data = read_squad(XQUAD)
    assert len(data.examples) == 1190 and len(data.articles) == 48 and data.bad_answers == 0
    train, dev = split_articles(XQUAD, 8)
    assert len(train.examples) + len(dev.examples) == 1190
    assert not {e.context for e in train.examples} & {e.context for e in dev.examples}


# -- windows ------------------------------------------------------------------------------


def test_window_starts():
    assert window_starts(10, 4, 3) == [(0, 4), (3, 4), (6, 4)]
    assert window_starts(20, 6, 3) == [(0, 6), (3, 6), (6, 6), (9, 6), (12, 6), (15, 5)]
    assert window_starts(3, 4, 2) == [(0, 3)]
    assert window_starts(8, 4, 4) == [(0, 4), (4, 4)]  # stride = window: no overlap, nothing skipped
    assert window_starts(0, 4, 2) == [(0, 0)]
    with pytest.raises(ConfigError, match="doc_stride=5"):
        window_starts(10, 4, 5)


def test_max_context():
    spans = window_starts(20, 6, 3)  # [(0,6), (3,6), (6,6), ...]
    # token 4: window 0 at 4 (min(4, 1) = 1), window 3 at 1 (min(1, 4) = 1): a tie, the first wins
    assert max_context(spans, 0, 4) and not max_context(spans, 1, 4)
    # token 5: window 0 at 5 (min 0), window 1 at 2 (min(2, 3) = 2), window 2 at... starts at 6: not inside
    assert max_context(spans, 1, 5) and not max_context(spans, 0, 5)
    # the last window is shorter (5 tokens): token 17 in window 4 at 5 (min 0) and window 5 at 2 (min(2, 2) = 2)
    assert max_context(spans, 5, 17)


def test_char_to_token_span():
    offsets = [(0, 4), (5, 9), (9, 10), (11, 15)]  # "word 1990s wxyz" as "word", "1990", "##s", "wxyz"
    assert char_to_token_span(offsets, 5, 9) == (1, 1)  # "1990" inside "1990s": the token "1990"
    assert char_to_token_span(offsets, 5, 10) == (1, 2)
    assert char_to_token_span(offsets, 4, 15) == (1, 3)  # a leading space is ignored
    assert char_to_token_span(offsets, 20, 22) is None


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory) -> WordPieceTokenizer:
    """A vocabulary where every word w0..w29, q0..q3 is one token."""
    words = [f"w{i}" for i in range(30)] + [f"q{i}" for i in range(4)]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join([*SPECIAL_TOKENS, *words]) + "\n")
    return WordPieceTokenizer.from_vocab(path)


def context(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def char_start(ctx: str, word: str) -> int:
    """Character offset of a word in a space-separated context."""
    words = ctx.split(" ")
    return sum(len(x) + 1 for x in words[: words.index(word)])


def test_windows_answer_across_a_window_boundary(word_tokenizer):
    tok = word_tokenizer
    ctx = context(20)
    start = char_start(ctx, "w5")
    ex = QAExample("x", "q0 q1", ctx, [("w5 w6 w7", start)])
    # [CLS] q0 q1 [SEP] = 4 tokens, 6 context tokens, [SEP]: 11; windows start at 0, 3, 6, 9, 12, 15
    w = make_windows(tok, [ex], max_len=11, doc_stride=3, max_question_len=8)
    assert len(w.windows) == 6 and w.truncated_questions == 0
    first = w.windows[1]
    assert first.ids[:4] == [tok.cls_id, tok.tokenizer.token_to_id("q0"), tok.tokenizer.token_to_id("q1"), tok.sep_id]
    assert first.segment_ids == [0] * 4 + [1] * 7
    assert tok.tokenizer.decode(first.ids[4:10]) == "w3 w4 w5 w6 w7 w8"
    assert first.ids[-1] == tok.sep_id and list(first.context_positions) == list(range(4, 10))
    # the answer (tokens 5..7) is whole only in the window starting at 3: positions 4 + 2 .. 4 + 4
    assert [(x.start_label, x.end_label) for x in w.windows] == [(0, 0), (6, 8), (0, 0), (0, 0), (0, 0), (0, 0)]
    # window 0 holds w5 but not w7 (the boundary cuts the answer); window 2 holds w7 but not w5
    assert tok.tokenizer.decode(w.windows[0].ids[4:10]) == "w0 w1 w2 w3 w4 w5"
    assert tok.tokenizer.decode(w.windows[2].ids[4:10]) == "w6 w7 w8 w9 w10 w11"
    # offsets map the labelled tokens back to the answer's characters
    s, e = first.offsets[6], first.offsets[8]
    assert ctx[s[0] : e[1]] == "w5 w6 w7"
    assert tok.tokenizer.decode(w.windows[-1].ids[4:-1]) == "w15 w16 w17 w18 w19"  # the last, shorter window


def test_windows_overlap_and_question_truncation(word_tokenizer):
    tok = word_tokenizer
    ctx = context(10)
    ex = QAExample("x", "q0 q1 q2 q3", ctx, [("w9", char_start(ctx, "w9"))])
    w = make_windows(tok, [ex], max_len=9, doc_stride=2, max_question_len=2)  # [CLS] q0 q1 [SEP] + 4 + [SEP]
    assert w.truncated_questions == 1
    assert [tok.tokenizer.decode(x.ids[4:-1]) for x in w.windows] == ["w0 w1 w2 w3", "w2 w3 w4 w5", "w4 w5 w6 w7", "w6 w7 w8 w9"]
    assert [(x.start_label, x.end_label) for x in w.windows] == [(0, 0), (0, 0), (0, 0), (7, 7)]
    assert all(len(x.ids) <= 9 for x in w.windows)


def test_windows_fit_in_one(word_tokenizer):
    ctx = context(5)
    ex = QAExample("x", "q0", ctx, [("w0", 0)])
    w = make_windows(word_tokenizer, [ex], max_len=32, doc_stride=8)
    assert len(w.windows) == 1 and (w.windows[0].start_label, w.windows[0].end_label) == (3, 3)


# -- answer extraction --------------------------------------------------------------------


def logits_for(windows, picks: dict[int, tuple[dict[int, float], dict[int, float]]]):
    out = []
    for k, win in enumerate(windows.windows):
        start, end = torch.zeros(len(win.ids)), torch.zeros(len(win.ids))
        for pos, v in picks.get(k, ({}, {}))[0].items():
            start[pos] = v
        for pos, v in picks.get(k, ({}, {}))[1].items():
            end[pos] = v
        out.append((start, end))
    return out


def test_extract_answers_over_windows(word_tokenizer):
    ctx = context(20)
    ex = QAExample("x", "q0 q1", ctx, [("w5 w6 w7", char_start(ctx, "w5"))])
    w = make_windows(word_tokenizer, [ex], max_len=11, doc_stride=3)
    # window 1 (w3..w8): start at w5 (position 6), end at w7 (position 8): 5 + 4 = 9
    # window 2 (w6..w11): start w8 (position 6) 4, end w9 (position 7) 4: 8, lower
    got = extract_answers([ex], w, logits_for(w, {1: ({6: 5.0}, {8: 4.0}), 2: ({6: 4.0}, {7: 4.0})}))
    assert got == {"x": "w5 w6 w7"}
    # the same winning span now scores lower than window 2's
    got = extract_answers([ex], w, logits_for(w, {1: ({6: 3.0}, {8: 4.0}), 2: ({6: 4.0}, {7: 4.0})}))
    assert got == {"x": "w8 w9"}
    # a start outside its max-context window does not count: w6 has min(3, 2) = 2 tokens of
    # context in window 1 but none on its left in window 2 (position 4), so window 2 ignores it
    got = extract_answers([ex], w, logits_for(w, {1: ({6: 3.0}, {8: 4.0}), 2: ({4: 10.0}, {7: 4.0})}))
    assert got == {"x": "w5 w6 w7"}


def test_extract_answers_rules(word_tokenizer):
    ctx = context(8)
    ex = QAExample("x", "q0", ctx, [("w1", 3)])
    w = make_windows(word_tokenizer, [ex], max_len=32, doc_stride=8)  # one window: [CLS] q0 [SEP] w0..w7 [SEP]
    c = 3  # position of w0
    # the question token and [CLS] have the highest logits but are not context: ignored
    assert extract_answers([ex], w, logits_for(w, {0: ({0: 9.0, 1: 9.0, c + 2: 2.0}, {0: 9.0, c + 3: 1.0})})) == {"x": "w2 w3"}
    # an end before the start is not a span: the best valid pair is w2..w2 (start w2 + end w2)
    assert extract_answers([ex], w, logits_for(w, {0: ({c + 2: 5.0}, {c + 1: 5.0, c + 2: 1.0})})) == {"x": "w2"}
    # max_answer_len: w0..w7 (8 tokens) is too long at 3; the next best pair is w5..w7
    lg = logits_for(w, {0: ({c: 5.0, c + 5: 1.0}, {c + 7: 5.0})})
    assert extract_answers([ex], w, lg, max_answer_len=8) == {"x": ctx}
    assert extract_answers([ex], w, lg, max_answer_len=3) == {"x": "w5 w6 w7"}
    # n_best=1: only the top start and top end are paired; they form no valid span -> ""
    lg = logits_for(w, {0: ({c + 4: 5.0, c + 1: 4.0}, {c + 2: 5.0, c + 5: 0.5})})
    assert extract_answers([ex], w, lg, n_best=1) == {"x": ""}
    assert extract_answers([ex], w, lg, n_best=2) == {"x": "w1 w2"}  # 4 + 5 beats 5 + 0.5


def test_extract_answers_maps_subword_offsets(tmp_path):
    """Answers are cut from the original context (case, accents, punctuation kept), through the offsets."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*SPECIAL_TOKENS, "who", "?", "cafe", "##s", "in", "paris", ",", "1990", "the"]) + "\n")
    tok = WordPieceTokenizer.from_vocab(vocab)
    ctx = "The Cafés in  Paris, 1990s"
    ex = QAExample("x", "who?", ctx, [("Cafés", 4)])
    w = make_windows(tok, [ex], max_len=32, doc_stride=8)
    win = w.windows[0]
    assert [tok.tokenizer.id_to_token(i) for i in win.ids] == [
        "[CLS]", "who", "?", "[SEP]", "the", "cafe", "##s", "in", "paris", ",", "1990", "##s", "[SEP]"]
    c = list(win.context_positions)[0]  # "the"
    assert (win.start_label, win.end_label) == (c + 1, c + 2)  # cafe ##s
    got = extract_answers([ex], w, logits_for(w, {0: ({c + 1: 3.0}, {c + 4: 3.0})}))  # "cafe" .. "paris"
    assert got == {"x": "Cafés in  Paris"}
    got = extract_answers([ex], w, logits_for(w, {0: ({c + 6: 3.0}, {c + 6: 3.0})}))  # "1990" of "1990s"
    assert got == {"x": "1990"}


def test_batches_group_by_length_and_cover_every_window(word_tokenizer):
    from attnkit.data.squad import batches

    exs = [QAExample(str(n), "q0", context(n), [("w0", 0)]) for n in range(1, 30)]
    w = make_windows(word_tokenizer, exs, max_len=16, doc_stride=6).windows
    for shuffle in (False, True):
        seen = []
        for b in batches(w, 4, word_tokenizer.pad_id, shuffle=shuffle, seed=3):
            seen += b.index
            lengths = [len(w[i].ids) for i in b.index]
            assert b.ids.shape == (len(b.index), max(lengths))
            assert b.attention_mask.sum(1).tolist() == lengths
            assert b.start.tolist() == [w[i].start_label for i in b.index]
        assert sorted(seen) == list(range(len(w)))
    # one bucket holds everything: consecutive batches of the sorted windows, so the padding of a
    # batch is at most 4 * (its longest - its shortest), and these spreads add up to at most the total spread
    lengths = [len(x.ids) for x in w]
    padded = sum(b.ids.numel() for b in batches(w, 4, 0, bucket=100))
    assert padded - sum(lengths) <= 4 * (max(lengths) - min(lengths))


def test_malformed_answers_are_counted(tmp_path, word_tokenizer):
    ctx = "w0 w1  w2"
    art = article("A", ctx, [("q0", [("w1", 3)]), ("q1", [("  ", 5)])])
    art["paragraphs"][0]["qas"][0]["answers"].append("w1")  # not an object: counted and skipped
    art["paragraphs"][0]["qas"][0]["answers"].append({"text": "w1", "answer_start": -6})  # negative offset
    data = read_squad(squad_file(tmp_path, [art]))
    assert data.bad_answers == 2 and [e.id for e in data.examples] == ["A-0", "A-1"]
    w = make_windows(word_tokenizer, data.examples, max_len=16, doc_stride=4)
    assert w.unlabelled == 1  # the whitespace answer covers no token: its window is labelled [CLS]
    assert [(x.start_label, x.end_label) for x in w.windows] == [(4, 4), (0, 0)]
