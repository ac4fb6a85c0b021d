"""Normalisation layers and the choice between them.

* ``layer``: LayerNorm (Ba et al. 2016), y = (x - mean(x)) / sqrt(var(x) + eps) * g + b.
* ``rms``: RMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", eq. 4),
  y = x / RMS(x) * g with RMS(x) = sqrt(mean(x^2) + eps): no re-centering and no bias, the
  norm of Llama, Mistral and Qwen2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.layers.batchnorm import MaskedBatchNorm


class RMSNorm(nn.Module):
    """RMSNorm over the last axis with a learned gain ``weight`` (initialised to 1).

    The statistic is computed in float32 for half-precision inputs and the normalised value is
    cast back before the gain is applied, as the Llama reference implementation does.

    Args:
        d_model: size of the normalised (last) axis.
        eps: added to the mean square inside the square root.
    """

    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        h = F.rms_norm(x.float(), (x.shape[-1],), None, self.eps)  # x / sqrt(mean(x^2) + eps), (..., d_model)
        return self.weight * h.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


NORMS = ("layer", "rms", "batch")


def build_norm(kind: str, d_model: int, eps: float = 1e-5) -> nn.Module:
    """The normalisation layer called ``kind`` (one of :data:`NORMS`) over ``d_model`` features.

    Args:
        kind: ``layer`` (``nn.LayerNorm``) or ``rms`` (:class:`RMSNorm`).
        d_model: size of the normalised axis.
        eps: the layer's epsilon.

    Returns:
        The module.
    """
    if kind == "layer":
        return nn.LayerNorm(d_model, eps=eps)
    if kind == "rms":
        return RMSNorm(d_model, eps)
    if kind == "batch":  # over the real tokens of the batch
        return MaskedBatchNorm(d_model, eps)
    raise ValueError(f"norm={kind!r} is not one of {', '.join(NORMS)}")
