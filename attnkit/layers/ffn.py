"""Position-wise feed-forward network (Vaswani et al. 2017, section 3.3, eq. (2)).

    FFN(x) = max(0, x W_1 + b_1) W_2 + b_2

with the ReLU replaceable by GELU (Hendrycks & Gimpel 2016): the exact erf form
(BERT), its tanh approximation (GPT-2) and the sigmoid approximation x * sigmoid(1.702 x).

Gated variants (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6):

    FFN_SwiGLU(x) = (Swish_1(x W) * x V) W_2,   FFN_GEGLU(x) = (GELU(x W) * x V) W_2

(Swish_1 = SiLU, x * sigmoid(x)); the paper drops the biases, here they are optional.
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
    "silu": F.silu,  # Swish_1 (Ramachandran et al. 2017), the gate of SwiGLU
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


class GatedFeedForward(nn.Module):
    """(act(x W) * x V) W_2 (Shazeer 2020, eq. 6): SwiGLU with ``silu``, GEGLU with ``gelu``.

    W and V are one ``(d_model, 2 d_ff)`` matrix ``w1`` (W's rows first), so both come from one
    matrix product; ``w2`` is W_2.

    Args:
        d_model: model width.
        d_ff: width of the gated hidden layer.
        activation_name: the gate's activation (a key of :data:`ACTIVATIONS`).
        dropout: dropout on the gated hidden layer while training.
        bias: whether ``w1`` and ``w2`` have biases.
    """

    def __init__(self, d_model: int, d_ff: int, activation_name: str = "silu", dropout: float = 0.0, bias: bool = False) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, 2 * d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)
        self.activation_name = activation_name
        self.act = activation(activation_name)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w1(x).chunk(2, dim=-1)  # 2 x (B, T, d_ff): x W, x V
        h = self.act(gate) * up  # (B, T, d_ff)
        return self.w2(self.dropout(h) if self.training else h)  # (B, T, d_model)

    def extra_repr(self) -> str:
        return f"gated, activation={self.activation_name}"


def build_ffn(kind: str, d_model: int, d_ff: int, activation_name: str, dropout: float = 0.0, bias: bool = True) -> nn.Module:
    """``mlp`` (:class:`FeedForward`) or ``gated`` (:class:`GatedFeedForward`: SwiGLU with ``silu``, GEGLU with ``gelu``).

    Args:
        kind: ``mlp`` or ``gated``.
        d_model: model width.
        d_ff: hidden width.
        activation_name: a key of :data:`ACTIVATIONS`.
        dropout: dropout on the hidden layer.
        bias: whether the linear layers have biases.

    Returns:
        The module.
    """
    if kind == "mlp":
        return FeedForward(d_model, d_ff, activation_name, dropout, bias)
    if kind == "gated":
        return GatedFeedForward(d_model, d_ff, activation_name, dropout, bias)
    raise ValueError(f"ffn={kind!r} is not one of mlp, gated")
