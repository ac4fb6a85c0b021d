"""The position-wise FFN (section 3.3, eq. (2)) and its activations against torch.nn and the formulas."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnkit.layers import ACTIVATIONS, FeedForward, activation

X = torch.linspace(-6, 6, 97, dtype=torch.float64)


def test_activation_names() -> None:
    assert set(ACTIVATIONS) == {"relu", "gelu", "gelu_tanh", "gelu_sigmoid", "silu"}


def test_relu() -> None:
    torch.testing.assert_close(activation("relu")(X), nn.ReLU()(X))


def test_gelu_exact_matches_torch_and_the_erf_formula() -> None:
    torch.testing.assert_close(activation("gelu")(X), nn.GELU(approximate="none")(X))
    by_hand = torch.tensor([x * 0.5 * (1 + math.erf(x / math.sqrt(2))) for x in X.tolist()], dtype=torch.float64)
    torch.testing.assert_close(activation("gelu")(X), by_hand)


def test_gelu_tanh_matches_torch_and_the_formula() -> None:
    torch.testing.assert_close(activation("gelu_tanh")(X), nn.GELU(approximate="tanh")(X))
    c = math.sqrt(2 / math.pi)
    by_hand = torch.tensor([0.5 * x * (1 + math.tanh(c * (x + 0.044715 * x**3))) for x in X.tolist()], dtype=torch.float64)
    torch.testing.assert_close(activation("gelu_tanh")(X), by_hand)


def test_gelu_sigmoid_is_x_sigmoid_1702x() -> None:
    by_hand = torch.tensor([x / (1 + math.exp(-1.702 * x)) for x in X.tolist()], dtype=torch.float64)
    torch.testing.assert_close(activation("gelu_sigmoid")(X), by_hand)


def test_unknown_activation_names_it() -> None:
    with pytest.raises(ValueError, match="'swish'"):
        activation("swish")
    with pytest.raises(ValueError, match="'swish'"):
        FeedForward(4, 8, "swish")


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_feed_forward_is_w2_act_w1(name: str) -> None:
    torch.manual_seed(0)
    ffn = FeedForward(6, 10, name).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    reference = {"relu": nn.ReLU(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"),
                 "gelu_sigmoid": lambda h: h * torch.sigmoid(1.702 * h), "silu": nn.SiLU()}[name]
    hidden = x @ ffn.w1.weight.T + ffn.w1.bias  # (B, T, d_ff)
    expected = reference(hidden) @ ffn.w2.weight.T + ffn.w2.bias
    torch.testing.assert_close(ffn(x), expected)


def test_feed_forward_without_bias() -> None:
    ffn = FeedForward(4, 8, bias=False)
    assert ffn.w1.bias is None and ffn.w2.bias is None
