"""BART's noising functions and MASS against their definitions (Lewis et al. 2020, section 2.2; Song et al. 2019, section 2.2)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from attnkit.data.noising import (BartNoiseConfig, bart_noise, delete_tokens, infilling_spans, mass_fragment, permute_sentences,
                                  rotate, text_infilling)

MASK = 4


def is_subsequence(short: list[int], long: list[int]) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


def test_infilling_spans_are_poisson_3_and_cover_30_percent():
    g = torch.Generator().manual_seed(0)
    counts: Counter[int] = Counter()
    for _ in range(600):
        spans = infilling_spans(200, 0.3, 3.0, generator=g)
        assert sum(spans) == 60
        counts.update(spans[:-1])  # the last span is cut to fit
    total = sum(counts.values())
    pmf = {k: math.exp(-3) * 3**k / math.factorial(k) for k in range(30)}
    tv = 0.5 * sum(abs(counts.get(k, 0) / total - p) for k, p in pmf.items())
    assert tv < 0.03 and counts[0] > 0  # zero-length spans occur (about 5%)


def test_text_infilling_replaces_each_span_by_one_mask():
    g = torch.Generator().manual_seed(1)
    for n in (1, 7, 50, 300):
        ids = list(range(10, 10 + n))
        state = g.get_state()
        spans = infilling_spans(n, generator=g)
        g.set_state(state)
        out = text_infilling(ids, MASK, generator=g)
        assert out.count(MASK) == len(spans)
        assert len(out) == n - round(0.3 * n) + len(spans)
        kept = [t for t in out if t != MASK]
        assert is_subsequence(kept, ids) and len(kept) == n - round(0.3 * n)


def test_zero_length_span_inserts_a_mask():
    """With lambda tiny nearly every span has length 0: masks are inserted while (almost) nothing is removed."""
    g = torch.Generator().manual_seed(2)
    ids = list(range(10, 30))
    out = text_infilling(ids, MASK, ratio=0.05, poisson_lambda=0.01, generator=g)
    kept = [t for t in out if t != MASK]
    assert out.count(MASK) > 1 and len(kept) == 19 and is_subsequence(kept, ids)


def test_sentence_permutation_round_trip():
    g = torch.Generator().manual_seed(3)
    sentences = [[10, 11], [12], [13, 14, 15], [16, 17]]
    seen = set()
    for _ in range(100):
        ids, order = permute_sentences(sentences, generator=g)
        assert sorted(order) == list(range(4))
        pieces, i = [], 0
        for j in order:
            pieces.append(ids[i : i + len(sentences[j])])
            i += len(sentences[j])
        restored = [None] * 4
        for piece, j in zip(pieces, order):
            restored[j] = piece
        assert restored == sentences
        seen.add(tuple(order))
    assert len(seen) == 24


def test_token_deletion_and_rotation():
    g = torch.Generator().manual_seed(4)
    ids = list(range(10, 60))
    out = delete_tokens(ids, 0.2, generator=g)
    assert len(out) == 40 and is_subsequence(out, ids) and MASK not in out
    starts = set()
    for _ in range(200):
        r, s = rotate(ids, generator=g)
        assert r == ids[s:] + ids[:s] and r[0] == ids[s]
        assert r[len(ids) - s :] + r[: len(ids) - s] == ids
        starts.add(s)
    assert len(starts) > 40


def test_bart_noise_defaults_are_infilling_plus_permutation():
    g = torch.Generator().manual_seed(5)
    sentences = [list(range(10 * k, 10 * k + 8)) for k in range(1, 6)]
    out = bart_noise(sentences, MASK, BartNoiseConfig(), generator=g)
    assert MASK in out and len(out) == 40 - 12 + out.count(MASK)
    plain = bart_noise(sentences, MASK, BartNoiseConfig(mask_ratio=0.0, permute_sentences=False), generator=g)
    assert plain == [t for s in sentences for t in s]


def test_mass_masks_one_contiguous_fragment_of_half():
    g = torch.Generator().manual_seed(6)
    ids = list(range(10, 30))
    starts = set()
    for _ in range(200):
        src, frag, start = mass_fragment(ids, MASK, generator=g)
        assert len(src) == 20 and frag == ids[start : start + 10]
        assert src[start : start + 10] == [MASK] * 10 and src[:start] + src[start + 10 :] == ids[:start] + ids[start + 10 :]
        starts.add(start)
    assert starts == set(range(11))
    assert mass_fragment([7], MASK, generator=g) == ([MASK], [7], 0)
    with pytest.raises(ValueError):
        mass_fragment([], MASK)
