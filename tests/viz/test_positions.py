"""viz positions: the figures exist, and the curves they draw equal the closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.layers.positional import sinusoid_table
from attnkit.viz.positions import alibi_bias, distance_similarity, rotary_scores, write_positions

plt = pytest.importorskip("matplotlib.pyplot")


def test_sinusoidal_similarity_is_a_sum_of_cosines_of_the_offset() -> None:
    """sin(a)sin(b) + cos(a)cos(b) = cos(a - b): PE(p) . PE(p + k) = sum_i cos(k / 10000^(2i/d))."""
    sim = distance_similarity(sinusoid_table(64, 16))
    expect = torch.tensor([sum(math.cos(k / 10000 ** (2 * i / 16)) for i in range(8)) for k in range(64)])
    torch.testing.assert_close(sim, expect, atol=1e-4, rtol=0)


def test_rotary_score_of_ones_is_twice_a_sum_of_cosines() -> None:
    """A pair (1, 1) rotated by m theta and n theta: dot product 2 cos((m - n) theta) (RoFormer eq. (34))."""
    scores = rotary_scores(head_dim=8, distances=40)
    theta = [10000 ** (-2 * i / 8) for i in range(4)]
    expect = torch.tensor([sum(2 * math.cos(r * t) for t in theta) for r in range(40)])
    torch.testing.assert_close(scores, expect, atol=1e-4, rtol=0)


def test_alibi_bias_is_minus_slope_times_distance() -> None:
    bias = alibi_bias(n_heads=8, t=6)
    for h in range(8):
        m = 2 ** (-8 * (h + 1) / 8)
        for i in range(6):
            for j in range(i + 1):
                assert abs(float(bias[h, i, j]) + m * (i - j)) < 1e-6


def test_figures_are_written(tmp_path) -> None:
    files = write_positions(tmp_path)
    assert [f.name for f in files] == ["sinusoidal.png", "sinusoidal_similarity.png", "rotary.png", "alibi.png"]
    assert plt.imread(files[0]).shape[:2] == (400, 600)
