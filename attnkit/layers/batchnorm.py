"""Batch normalisation over the real tokens of a batch (Ioffe & Szegedy 2015, algorithm 1), for the
Transformer's ``norm="batch"``.

Each feature is normalised by its mean and variance over every non-padding token of the batch (all rows
and positions together), then scaled and shifted: y = (x - mu_B) / sqrt(sigma_B^2 + eps) * gamma + beta.
Training updates running estimates (the unbiased variance, momentum 0.1, as ``torch.nn.BatchNorm1d``),
which evaluation uses instead, so at test time each token is normalised alone. The statistics of a
sequence model's batch mix tokens of different positions and sentences and change with the batch's
composition, which is the usual argument for LayerNorm in Transformers (Shen et al. 2020, "PowerNorm").

The model marks the real tokens before running a stack (:func:`token_mask`); without a mark, every
token counts.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the feature axis of ``(B, T, C)`` inputs, with statistics from the marked tokens only.

    Args:
        d_model: features C.
        eps: added to the variance.
        momentum: weight of the new batch in the running estimates.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.register_buffer("running_mean", torch.zeros(d_model))
        self.register_buffer("running_var", torch.ones(d_model))
        self.keep: Tensor | None = None  # (B, T) True = a real token; set by token_mask

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, T, C)`` (or any ``(..., C)``) normalised per feature."""
        if not self.training:
            mean, var = self.running_mean, self.running_var
        else:
            keep = self.keep
            flat = x.reshape(-1, x.shape[-1]).to(_compute_dtype(x))  # (N, C)
            if keep is not None and keep.shape == x.shape[:-1]:
                w = keep.reshape(-1, 1).to(flat.dtype)  # (N, 1): weights, not a boolean index (no host sync, graph-safe)
            else:
                w = torch.ones_like(flat[:, :1])
            n = w.sum()
            mean = (flat * w).sum(0) / n  # (C,)
            var = ((flat - mean).square() * w).sum(0) / n  # biased, as the normalisation uses
            with torch.no_grad():
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        y = (x.to(_compute_dtype(x)) - mean) * torch.rsqrt(var + self.eps)  # (..., C)
        return (y * self.weight + self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, momentum={self.momentum}"


@contextmanager
def token_mask(module: nn.Module, keep: Tensor | None) -> Iterator[None]:
    """Mark the real tokens ``keep: (B, T)`` for every :class:`MaskedBatchNorm` inside ``module``, for the
    duration of the block.

    Args:
        module: a stack (or model) whose batch norms see inputs ``(B, T, C)``.
        keep: True for real tokens, False for padding; None marks nothing (and costs nothing).
    """
    if keep is None:
        yield
        return
    norms = [m for m in module.modules() if isinstance(m, MaskedBatchNorm)]
    for m in norms:
        m.keep = keep
    try:
        yield
    finally:
        for m in norms:
            m.keep = None
