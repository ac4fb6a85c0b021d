"""Long ListOps generation: the task definition checked by an evaluator written here."""

from __future__ import annotations

import statistics

import pytest

from attnkit.data.listops import VOCAB, ListOpsConfig, apply, evaluate, generate


def reference_value(tokens: list[str]) -> tuple[int, int, int]:
    """(value, depth, widest operator) by recursive descent."""
    pos = 0

    def expr(depth: int) -> tuple[int, int, int]:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok.isdigit():
            return int(tok), depth, 0
        op, args, deepest, widest = tok[1:], [], depth + 1, 0
        while tokens[pos] != "]":
            v, d, w = expr(depth + 1)
            args.append(v)
            deepest, widest = max(deepest, d), max(widest, w)
        pos += 1
        if op == "MAX":
            value = max(args)
        elif op == "MIN":
            value = min(args)
        elif op == "MED":
            value = int(statistics.median(args))
        else:
            assert op == "SM"
            value = sum(args) % 10
        return value, deepest, max(widest, len(args))

    out = expr(0)
    assert pos == len(tokens)
    return out


def test_examples_follow_the_definition() -> None:
    cfg = ListOpsConfig(min_len=60, max_len=240)
    examples = generate(200, seed=3, config=cfg)
    for tokens, label in examples:
        value, depth, widest = reference_value(tokens)
        assert label == value and 0 <= label <= 9
        assert cfg.min_len <= len(tokens) <= cfg.max_len
        assert depth <= 10 and widest <= 10
        assert set(tokens) <= set(VOCAB)
    assert len({label for _, label in examples}) == 10  # all classes occur


def test_lra_lengths_and_determinism() -> None:
    a = generate(20, seed=0, split="validation")
    assert a == generate(20, seed=0, split="validation")
    assert a != generate(20, seed=0, split="test") and a != generate(20, seed=1, split="validation")
    assert all(500 <= len(t) <= 2000 for t, _ in a)
    assert all(reference_value(t)[0] == label for t, label in a)


def test_operators_and_errors() -> None:
    assert apply("MED", [1, 8, 9, 2]) == 5 and apply("MED", [1, 5, 8, 9, 2]) == 5 and apply("SM", [9, 9, 3]) == 1
    assert evaluate("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]".split()) == 5
    for bad in (["]"], ["[MAX", "1"], ["1", "2"], ["[FOO", "1", "]"]):
        with pytest.raises(ValueError):
            evaluate(bad)
    with pytest.raises(ValueError, match="max_args"):
        ListOpsConfig(max_args=1)
    with pytest.raises(ValueError, match="min_len"):
        ListOpsConfig(min_len=3000)
