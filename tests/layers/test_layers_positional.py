"""Positional encodings against section 3.5's formula evaluated with Python's ``math``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnkit.layers import LearnedPositions, SinusoidalPositions, TokenEmbedding, build_positions, sinusoid_table


def pe(pos: int, j: int, d_model: int) -> float:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    two_i = j - j % 2
    angle = pos / 10000 ** (two_i / d_model)
    return math.sin(angle) if j % 2 == 0 else math.cos(angle)


@pytest.mark.parametrize("d_model", [512, 8, 7])
def test_sinusoid_table_matches_the_formula(d_model: int) -> None:
    table = sinusoid_table(200, d_model)
    assert table.shape == (200, d_model) and table.dtype == torch.float32
    for pos in (0, 1, 2, 17, 199):
        for j in sorted({0, 1, 2, 3, d_model // 2, d_model // 2 + 1, d_model - 2, d_model - 1}):
            assert table[pos, j].item() == pytest.approx(pe(pos, j, d_model), abs=1e-6), (pos, j)


def test_sinusoid_table_every_entry_for_a_small_table() -> None:
    table = sinusoid_table(9, 6)
    expected = torch.tensor([[pe(p, j, 6) for j in range(6)] for p in range(9)])
    torch.testing.assert_close(table, expected)


def test_sinusoidal_positions_grow_past_max_len() -> None:
    enc = SinusoidalPositions(16, max_len=4)
    out = enc(torch.tensor([0, 3, 10, 57]))  # (T, d_model)
    for row, pos in enumerate((0, 3, 10, 57)):
        expected = torch.tensor([pe(pos, j, 16) for j in range(16)])
        torch.testing.assert_close(out[row], expected)
    assert out.shape == (4, 16)


def test_sinusoidal_positions_accept_batched_positions() -> None:
    enc = SinusoidalPositions(8, max_len=16)
    pos = torch.tensor([[0, 1, 2], [5, 6, 7]])  # (B, T)
    assert enc(pos).shape == (2, 3, 8)
    torch.testing.assert_close(enc(pos)[1, 2], enc(torch.tensor([7]))[0])


def test_learned_positions_refuse_positions_past_max_len() -> None:
    enc = LearnedPositions(8, max_len=5)
    assert enc(torch.arange(5)).shape == (5, 8)
    with pytest.raises(ValueError) as info:
        enc(torch.arange(7))
    msg = str(info.value)
    assert "7 positions" in msg and "max_len=5" in msg and "truncate" in msg
    assert "\n" not in msg


def test_sinusoidal_span_equals_indexing_and_grows() -> None:
    enc = SinusoidalPositions(8, max_len=4)
    span = enc.span(3, 6)  # positions 3..8, past max_len
    assert span.shape == (6, 8)
    torch.testing.assert_close(span, enc(torch.arange(3, 9)))
    torch.testing.assert_close(span[-1], torch.tensor([pe(8, j, 8) for j in range(8)]))


def test_learned_span_equals_indexing_and_refuses_past_max_len() -> None:
    enc = LearnedPositions(8, max_len=5)
    torch.testing.assert_close(enc.span(1, 4), enc(torch.arange(1, 5)))
    with pytest.raises(ValueError, match="6 positions .* max_len=5"):
        enc.span(2, 4)


def test_build_positions_unknown_kind() -> None:
    assert isinstance(build_positions("learned", 8, 4), LearnedPositions)
    assert isinstance(build_positions("sinusoidal", 8, 4), SinusoidalPositions)
    with pytest.raises(ValueError, match="'rotary'"):
        build_positions("rotary", 8, 4)


@pytest.mark.parametrize("scale", [True, False])
def test_token_embedding_scales_by_sqrt_d_model_and_adds_positions(scale: bool) -> None:
    torch.manual_seed(0)
    emb = nn.Embedding(11, 16)
    layer = TokenEmbedding(emb, SinusoidalPositions(16, max_len=32), dropout=0.0, scale=scale)
    ids = torch.tensor([[3, 4, 5], [6, 7, 8]])
    out = layer(ids, offset=4)  # positions 4, 5, 6
    factor = 4.0 if scale else 1.0  # sqrt(16)
    for b in range(2):
        for t in range(3):
            expected = emb.weight[ids[b, t]] * factor + torch.tensor([pe(4 + t, j, 16) for j in range(16)])
            torch.testing.assert_close(out[b, t], expected)
