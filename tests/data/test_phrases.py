"""Collocation phrases (Mikolov et al. 2013, section 4) against counts taken by hand, and data.phrases=auto end to end."""

from __future__ import annotations

import random

import pytest

from attnkit.data.phrases import collocation_phrases, score_pairs

FILLER = "the a of and to in is was it that with for on as by at from this be or".split()


def corpus(seed: int = 0, n: int = 300) -> list[str]:
    """Filler lines with 'new york city' and 'machine learning' planted in some of them."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = rng.choices(FILLER, k=rng.randint(4, 10))
        r = rng.random()
        if r < 0.15:
            words[rng.randint(0, len(words)):0] = ["new", "york", "city"]
        elif r < 0.3:
            words[rng.randint(0, len(words)):0] = ["machine", "learning"]
        lines.append(" ".join(words))
    return lines


def test_scores_equal_the_formula_on_hand_counts():
    lines = [["a", "b", "a", "b"], ["b", "a"], ["c", "a", "b"]]
    n = 9
    count = {"a": 4, "b": 4, "c": 1}
    pairs = {("a", "b"): 3, ("b", "a"): 2, ("c", "a"): 1}
    got = score_pairs(lines, delta=1.0)
    assert set(got) == set(pairs)  # no pair across lines: ("b", "b") and ("a", "c") never occur
    for (a, b), c in pairs.items():
        assert got[(a, b)] == pytest.approx((c - 1.0) / (count[a] * count[b]) * n)


def test_planted_collocations_are_found_and_grow_over_passes():
    text = "\n".join(corpus())
    one = collocation_phrases([text], passes=1)
    assert {"new york", "york city", "machine learning"} <= set(one)
    assert not any(w in FILLER for p in one for w in p.split())  # chance pairs of common words stay below the threshold
    two = collocation_phrases([text], passes=2)
    assert two[0].count(" ") >= 2 and "new york city" in two[0]  # the second pass joins a found pair to its neighbour
    assert collocation_phrases([text], threshold=1e9) == []


def test_phrases_auto_masks_the_found_phrases_as_units(tmp_path):
    from attnkit.cli.main import main

    text = "\n\n".join("\n".join(corpus(seed, 30)) for seed in range(10))
    (tmp_path / "t.txt").write_text(text)
    out = tmp_path / "run"
    argv = ["train", "mlm", "--text", str(tmp_path / "t.txt"), "--out", str(out), "--no-progress", "--whole-word", "--phrases", "auto",
            "--vocab-size", "120", "--max-seq-len", "32", "--set", "model.n_layers=1", "--set", "model.d_model=32",
            "--set", "model.n_heads=2", "--set", "train.steps=2", "--set", "train.batch_size=4",
            "--set", "train.eval.every=2", "--set", "train.schedule.warmup=1", "--set", "train.device=cpu",
            "--set", "data.max_eval_pairs=4"]
    assert main(argv) == 0
    found = (out / "phrases.txt").read_text().splitlines()
    assert "machine learning" in found and any("new york" in p for p in found)
    from attnkit.data.pretraining import tokenize_documents
    from attnkit.data.segment import PhraseLexicon
    from attnkit.data.wordpiece import WordPieceTokenizer

    tok = WordPieceTokenizer.from_file(out / "model")
    doc = tokenize_documents([["we like machine learning and new york city"]], tok, phrases=PhraseLexicon(found))[0][0]
    words = [tok.tokenizer.id_to_token(i) for i in doc.ids]
    begins = [w for w, s in zip(words, doc.starts) if s]
    assert "learning" not in begins and "york" not in begins and "machine" in begins  # one unit each


def test_no_phrase_is_a_one_line_error(tmp_path, capsys):
    from attnkit.cli.main import main

    (tmp_path / "t.txt").write_text("one two three four\n\nfive six seven eight\n")
    code = main(["train", "mlm", "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "o"), "--whole-word", "--phrases", "auto",
                 "--no-progress", "--set", "train.device=cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "data.phrases=auto found no phrase" in err and len(err.splitlines()) == 1
