"""ALiBi slopes and biases against Press et al. 2022, section 3: m_h = 2^(-8h/n) for n a power of two;
otherwise the n' = 2^floor(log2 n) slopes, then every other slope of 2n' heads (the authors' code)."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.positions.alibi import ALiBi, alibi_slopes


def paper_slopes(n: int) -> list[float]:
    def geometric(n: int) -> list[float]:  # start 2^(-8/n), ratio 2^(-8/n)
        start = 2.0 ** (-8.0 / n)
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return geometric(n)
    below = 2 ** int(math.log2(n))
    return geometric(below) + geometric(2 * below)[::2][: n - below]


def test_eight_heads_are_the_papers_halves() -> None:
    assert alibi_slopes(8).tolist() == [1 / 2**i for i in range(1, 9)]


@pytest.mark.parametrize("n", [1, 2, 4, 6, 12, 16, 20, 24, 32, 40])
def test_slopes_match_the_formula_including_non_powers_of_two(n: int) -> None:
    torch.testing.assert_close(alibi_slopes(n), torch.tensor(paper_slopes(n)), rtol=1e-6, atol=0)
    assert len(set(alibi_slopes(n).tolist())) == n  # every head its own slope


def test_twelve_heads_explicitly() -> None:
    want = [2.0 ** -i for i in range(1, 9)] + [2.0 ** -(i + 0.5) for i in range(0, 4)]
    torch.testing.assert_close(alibi_slopes(12), torch.tensor(want), rtol=1e-6, atol=0)


def test_bias_is_minus_slope_times_distance() -> None:
    h, tq, tk, off = 6, 3, 8, 5
    q, k = torch.zeros(2, h, tq, 4), torch.zeros(2, h, tk, 4)
    pos = torch.arange(off, off + tq)
    m = torch.tensor(paper_slopes(h))
    causal = ALiBi(h).bias(q, k, pos, causal=True, scale=1.0)
    both = ALiBi(h).bias(q, k, pos, causal=False, scale=1.0)
    for hh in range(h):
        for i in range(tq):
            for j in range(tk):
                d = off + i - j
                if d >= 0:
                    assert causal[0, hh, i, j] == pytest.approx(-m[hh] * d, rel=1e-6)
                assert both[0, hh, i, j] == pytest.approx(-m[hh] * abs(d), rel=1e-6)
