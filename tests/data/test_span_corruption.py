"""T5 span corruption against its definition (Raffel et al. 2020, section 3.1.4): lengths, density, spans, sentinels."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from attnkit.data.span_corruption import (SpanCorruptionConfig, corrupted_lengths, random_composition, random_spans_noise_mask,
                                          span_corrupt, t5_lengths)
from attnkit.errors import ConfigError

SENTINELS = list(range(1000, 1100))
EOS = 2


def spans_of(mask: list[bool]) -> list[int]:
    """Lengths of the runs of True, counted directly."""
    out, run = [], 0
    for b in [*mask, False]:
        if b:
            run += 1
        elif run:
            out.append(run)
            run = 0
    return out


def test_t5_c4_lengths():
    """T5 on C4: inputs of 512 tokens come from 568 raw tokens and give targets of 114 (85 noise + 28 sentinels + EOS)."""
    assert t5_lengths(512) == (568, 114)
    assert corrupted_lengths(568) == (512, 114)
    assert corrupted_lengths(569)[0] > 512  # the longest raw length that fits
    assert t5_lengths(128) == (141, 29)


@pytest.mark.parametrize("inputs_length", [16, 64, 114, 512])
def test_lengths_hold_for_every_draw(inputs_length):
    raw, targets = t5_lengths(inputs_length)
    g = torch.Generator().manual_seed(inputs_length)
    for _ in range(20):
        mask = random_spans_noise_mask(raw, generator=g)
        inputs, tgt = span_corrupt(list(range(10, 10 + raw)), mask, SENTINELS, EOS)
        assert (len(inputs), len(tgt)) == (inputs_length, targets)


def test_noise_density_within_001_over_many_samples():
    g = torch.Generator().manual_seed(0)
    noise = total = 0
    for length in torch.randint(20, 600, (400,), generator=g).tolist():
        mask = random_spans_noise_mask(length, generator=g)
        noise += sum(mask)
        total += length
        assert abs(sum(mask) / length - 0.15) <= 0.5 / length + 1e-9  # exact up to rounding in every sample
    assert abs(noise / total - 0.15) < 0.01


def test_span_length_distribution_is_a_uniform_composition():
    """85 noise tokens in 28 spans: P(span = l) = C(85 - l - 1, 26) / C(84, 27) for a uniformly random composition."""
    g = torch.Generator().manual_seed(1)
    counts: Counter[int] = Counter()
    n_spans = []
    for _ in range(1500):
        spans = spans_of(random_spans_noise_mask(568, generator=g))
        counts.update(spans)
        n_spans.append(len(spans))
    assert set(n_spans) == {28}
    total = sum(counts.values())
    expected = {l: math.comb(85 - l - 1, 26) / math.comb(84, 27) for l in range(1, 59)}
    assert abs(sum(expected.values()) - 1) < 1e-12
    tv = 0.5 * sum(abs(counts.get(l, 0) / total - p) for l, p in expected.items())
    assert tv < 0.015
    assert abs(sum(l * c for l, c in counts.items()) / total - 85 / 28) < 1e-9  # the mean is exact: 85 tokens / 28 spans


def test_short_inputs_are_random():
    """Ten tokens give one span of two; it may sit anywhere, not always at the end."""
    g = torch.Generator().manual_seed(2)
    masks = {tuple(random_spans_noise_mask(10, generator=g)) for _ in range(400)}
    assert len(masks) == 9  # every start 0..8 of a span of 2
    assert all(sum(m) == 2 and spans_of(list(m)) == [2] for m in masks)
    assert all(len(random_spans_noise_mask(1, generator=g)) == 1 for _ in range(5))


def test_sentinels_in_order_and_round_trip():
    g = torch.Generator().manual_seed(3)
    for length in (2, 5, 37, 200):
        ids = torch.randint(10, 900, (length,), generator=g).tolist()
        mask = random_spans_noise_mask(length, generator=g)
        inputs, targets = span_corrupt(ids, mask, SENTINELS, EOS)
        k = len(spans_of(mask))
        assert [t for t in inputs if t in SENTINELS] == SENTINELS[:k] == [t for t in targets if t in SENTINELS]
        assert inputs[-1] == targets[-1] == EOS and targets[0] == SENTINELS[0]
        # put each span back where its sentinel stands: the original sequence
        pieces: dict[int, list[int]] = {}
        for t in targets[:-1]:
            if t in SENTINELS:
                cur = pieces.setdefault(t, [])
            else:
                cur.append(t)
        restored = [x for t in inputs[:-1] for x in (pieces[t] if t in SENTINELS else [t])]
        assert restored == ids


def test_too_few_sentinels_is_an_error():
    with pytest.raises(ValueError, match="sentinels"):
        span_corrupt([5, 6, 7, 8], [True, False, True, False], [1000], EOS)


@pytest.mark.parametrize("minimum", [0, 1])
def test_random_composition_sums_and_bounds(minimum):
    g = torch.Generator().manual_seed(4)
    seen = set()
    for _ in range(300):
        parts = random_composition(5, 3, g, minimum=minimum)
        assert sum(parts) == 5 and len(parts) == 3 and min(parts) >= minimum
        seen.add(tuple(parts))
    assert len(seen) == (math.comb(7, 2) if minimum == 0 else math.comb(4, 2))


def test_config_validates():
    with pytest.raises(ConfigError, match="noise_density"):
        SpanCorruptionConfig(noise_density=1.5)
