"""Residual connections: post-norm LayerNorm(x + f(x)) (the paper) and pre-norm x + f(LayerNorm(x))."""

from __future__ import annotations

import pytest
import torch

from attnkit.layers import Residual


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)  # biased variance, as in Ba et al. 2016
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


@pytest.mark.parametrize("position", ["post", "pre"])
def test_residual_matches_the_formula(position: str) -> None:
    torch.manual_seed(0)
    res = Residual(8, dropout=0.0, norm_position=position, eps=1e-6).double()
    with torch.no_grad():
        res.norm.weight.normal_()
        res.norm.bias.normal_()
    x = torch.randn(2, 3, 8, dtype=torch.float64)

    def sub(h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h) * 3

    ln = lambda h: layer_norm(h, res.norm.weight, res.norm.bias, 1e-6)  # noqa: E731
    expected = ln(x + sub(x)) if position == "post" else x + sub(ln(x))
    torch.testing.assert_close(res(x, sub), expected)


def test_residual_dropout_applies_to_the_sublayer_output_only() -> None:
    res = Residual(4, dropout=0.5, norm_position="pre").train()
    x = torch.randn(64, 4)
    out = res(x, lambda h: torch.zeros_like(h))
    torch.testing.assert_close(out, x)  # dropout(0) == 0: the residual path is untouched


def test_residual_unknown_position() -> None:
    with pytest.raises(ValueError, match="'middle'"):
        Residual(4, 0.0, "middle")
