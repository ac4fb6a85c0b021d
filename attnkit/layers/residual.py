"""Residual connection around a sublayer, with layer normalisation.

* ``post`` (the paper, section 3.1): LayerNorm(x + Dropout(Sublayer(x)))
* ``pre`` (Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture"):
  x + Dropout(Sublayer(LayerNorm(x))); a stack of pre-norm layers ends with a final LayerNorm.

Dropout on each sublayer output before the residual sum is the paper's section 5.4.
``norm`` chooses the normalisation (:func:`attnkit.layers.norm.build_norm`: LayerNorm or RMSNorm).
"""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from attnkit.layers.norm import build_norm


class Residual(nn.Module):
    """Holds the LayerNorm and dropout of one sublayer connection."""

    def __init__(self, d_model: int, dropout: float, norm_position: str = "post", eps: float = 1e-5, norm: str = "layer") -> None:
        super().__init__()
        if norm_position not in ("post", "pre"):
            raise ValueError(f"norm_position={norm_position!r} is not one of 'post', 'pre'")
        self.norm_position = norm_position
        self.norm = build_norm(norm, d_model, eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        # Dropout is the identity in eval mode: not calling it saves host time per layer when
        # decoding one token at a time.
        if self.norm_position == "pre":
            h = sublayer(self.norm(x))
            return x + (self.dropout(h) if self.training else h)
        h = sublayer(x)
        return self.norm(x + (self.dropout(h) if self.training else h))
