"""Position-wise feed-forward network (Vaswani et al. 2017, section 3.3, eq. (2)).

    FFN(x) = max(0, x W_1 + b_1) W_2 + b_2

with the ReLU replaceable by GELU (Hendrycks & Gimpel 2016): the exact erf form
(BERT), its tanh approximation (GPT-2) and the sigmoid approximation x * sigmoid(1.702 x).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def gelu_sigmoid(x: Tensor) -> Tensor:
    """x * sigmoid(1.702 x) (Hendrycks & Gimpel 2016, section 2)."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact: x * Phi(x) with the erf
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_sigmoid": gelu_sigmoid,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class FeedForward(nn.Module):
    """Linear(d_model, d_ff) -> activation -> dropout -> Linear(d_ff, d_model)."""

    def __init__(self, d_model: int, d_ff: int, activation_name: str = "relu", dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)
        self.activation_name = activation_name
        self.act = activation(activation_name)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.w1(x))  # (B, T, d_ff)
        return self.w2(self.dropout(h) if self.training else h)  # (B, T, d_model)

    def extra_repr(self) -> str:
        return f"activation={self.activation_name}"
