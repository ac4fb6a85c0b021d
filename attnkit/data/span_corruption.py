"""T5's span corruption (Raffel et al. 2020, section 3.1.4 and 3.3.4): the unsupervised seq2seq objective.

A fraction ``noise_density`` (0.15) of a token sequence is chosen as noise, in spans whose mean
length is ``mean_noise_span_length`` (3). Each noise span is replaced in the input by one sentinel
token, the sentinels numbered in order of appearance; the target lists every sentinel followed by
the span it stands for. Input and target each end with EOS:

    tokens   a b c d e f g h
    noise        ^ ^     ^
    inputs   a b <X0> e f <X1> h </s>
    targets  <X0> c d <X1> g </s>

The counts are exact, not sampled, as in the T5 code: ``round(n * noise_density)`` noise tokens
(at least 1, at most ``n - 1``) in ``round(noise / mean_noise_span_length)`` spans (at least 1). So
the inputs hold ``non-noise + spans + 1`` tokens and the targets ``noise + spans + 1``, and
:func:`t5_lengths` inverts that: the raw sequence length whose corrupted inputs are exactly
``inputs_length`` tokens (512 inputs need 568 raw tokens and give 114 targets, T5's C4 setting).

The noise span lengths are a uniformly random composition of the noise tokens into the spans
(each span at least one token), as in T5. Deviation: T5 also splits the non-noise tokens into as
many runs as there are noise spans and interleaves them non-noise first, so its sequences always
start with non-noise and end with noise; for a short input (one span) the noise is then always the
last tokens. Here the non-noise tokens are split into ``spans + 1`` runs, the first and last
possibly empty and the inner ones at least one token (so spans never touch), uniformly at random:
a span can sit anywhere, also in a sequence of ten tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from attnkit.config import Config, check


@dataclass(frozen=True, kw_only=True)
class SpanCorruptionConfig(Config):
    """T5's span corruption: the fraction of tokens that is noise and the mean length of a noise span (section 3.3.4)."""

    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0

    def validate(self) -> None:
        check(0.0 < self.noise_density < 1.0, "noise_density", self.noise_density, "must be in (0, 1)")
        check(self.mean_noise_span_length >= 1.0, "mean_noise_span_length", self.mean_noise_span_length, "must be >= 1")


def noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """The number of noise tokens and noise spans of a sequence of ``length`` tokens (``length >= 2``).

    Args:
        length: tokens in the raw sequence.
        noise_density: fraction of tokens that are noise.
        mean_noise_span_length: the mean span length.

    Returns:
        ``(noise tokens, noise spans)``: ``round(length * density)`` clipped to ``[1, length - 1]``, and
        ``round(noise / mean)`` at least 1 (and at most one more than the non-noise tokens, so spans never touch).
    """
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(round(n_noise / mean_noise_span_length), 1)
    return n_noise, min(n_spans, length - n_noise + 1)


def corrupted_lengths(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """The lengths of the inputs and targets that span corruption makes of ``length`` raw tokens, each with its EOS.

    Args:
        length: raw tokens (at least 2).
        noise_density: fraction of tokens that are noise.
        mean_noise_span_length: the mean span length.

    Returns:
        ``(non-noise + spans + 1, noise + spans + 1)``.
    """
    n_noise, n_spans = noise_counts(length, noise_density, mean_noise_span_length)
    return length - n_noise + n_spans + 1, n_noise + n_spans + 1


def t5_lengths(inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """The raw length to cut the text into so that the corrupted inputs hold ``inputs_length`` tokens, and the targets' length.

    The longest raw length whose inputs (EOS included) still fit ``inputs_length``, as T5's
    ``random_spans_helper`` chooses it: 512 -> (568, 114); 128 -> (141, 29) at the defaults. With
    ``noise_density == 0.5`` and targets longer than the inputs, one raw token fewer (T5's rule to
    keep the targets at the inputs' round length).

    Args:
        inputs_length: the encoder length, EOS included (at least 3).
        noise_density: fraction of tokens that are noise.
        mean_noise_span_length: the mean span length.

    Returns:
        ``(raw tokens, targets length with EOS)``.

    Raises:
        ValueError: ``inputs_length < 3``.
    """
    if inputs_length < 3:
        raise ValueError(f"inputs_length={inputs_length} must be at least 3 (a token, a sentinel and EOS)")
    raw = 2
    while corrupted_lengths(raw + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        raw += 1
    targets = corrupted_lengths(raw, noise_density, mean_noise_span_length)[1]
    if noise_density == 0.5 and targets > inputs_length:
        raw, targets = raw - 1, targets - 1
    return raw, targets


def random_composition(total: int, parts: int, generator: torch.Generator | None = None, *, minimum: int = 1) -> list[int]:
    """``total`` split into ``parts`` non-negative integers, each at least ``minimum`` (0 or 1), uniformly over all such splits.

    Stars and bars: ``parts - 1`` bars are placed among ``total + parts - 1`` slots (``minimum=0``), or
    ``parts - 1`` cuts among the ``total - 1`` gaps between items (``minimum=1``).

    Args:
        total: the number to split.
        parts: the number of parts (at least 1).
        generator: the random source.
        minimum: 0 or 1.

    Returns:
        The ``parts`` sizes, summing to ``total``.
    """
    if parts == 1:
        return [total]
    if minimum == 1:
        cuts = sorted((torch.randperm(total - 1, generator=generator)[: parts - 1] + 1).tolist())
        edges = [0, *cuts, total]
        return [b - a for a, b in zip(edges, edges[1:])]
    bars = sorted(torch.randperm(total + parts - 1, generator=generator)[: parts - 1].tolist())
    edges = [-1, *bars, total + parts - 1]
    return [b - a - 1 for a, b in zip(edges, edges[1:])]


def random_spans_noise_mask(
    length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0, *, generator: torch.Generator | None = None
) -> list[bool]:
    """Which of ``length`` tokens are noise: :func:`noise_counts` tokens in that many spans, placed at random.

    Args:
        length: tokens in the sequence (at least 1; a single token is handled as two, then cut).
        noise_density: fraction of tokens that are noise.
        mean_noise_span_length: the mean span length.
        generator: the random source.

    Returns:
        One bool per token, True for noise.
    """
    if length < 1:
        raise ValueError(f"length={length} must be at least 1")
    n = max(length, 2)
    n_noise, n_spans = noise_counts(n, noise_density, mean_noise_span_length)
    spans = random_composition(n_noise, n_spans, generator, minimum=1)
    gaps = random_composition(n - n_noise - (n_spans - 1), n_spans + 1, generator, minimum=0)
    gaps = [g + (0 < i < n_spans) for i, g in enumerate(gaps)]  # inner runs of non-noise hold at least one token
    mask: list[bool] = [False] * gaps[0]
    for span, gap in zip(spans, gaps[1:]):
        mask += [True] * span + [False] * gap
    return mask[:length]


def span_corrupt(
    ids: Sequence[int], noise_mask: Sequence[bool], sentinel_ids: Sequence[int], eos_id: int
) -> tuple[list[int], list[int]]:
    """T5's inputs and targets for ``ids`` with ``noise_mask``: each noise span becomes the next sentinel.

    Args:
        ids: the raw tokens.
        noise_mask: True where a token is noise (:func:`random_spans_noise_mask`).
        sentinel_ids: the sentinel tokens in order (``<extra_id_0>``, ``<extra_id_1>``, ...).
        eos_id: appended to both.

    Returns:
        ``(inputs, targets)``: the non-noise tokens with a sentinel for each noise span, then EOS; each sentinel
        followed by its span, then EOS.

    Raises:
        ValueError: the lengths differ, or there are more spans than sentinels.
    """
    if len(ids) != len(noise_mask):
        raise ValueError(f"ids has {len(ids)} tokens but noise_mask {len(noise_mask)}")
    inputs: list[int] = []
    targets: list[int] = []
    n_spans = 0
    for i, (token, noise) in enumerate(zip(ids, noise_mask)):
        if noise and (i == 0 or not noise_mask[i - 1]):  # a span starts
            if n_spans == len(sentinel_ids):
                raise ValueError(f"the noise mask has more spans than the {len(sentinel_ids)} sentinels")
            inputs.append(sentinel_ids[n_spans])
            targets.append(sentinel_ids[n_spans])
            n_spans += 1
        (targets if noise else inputs).append(token)
    return inputs + [eos_id], targets + [eos_id]
