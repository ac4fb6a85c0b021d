"""The attention viewer's data: probabilities quantised to bytes, compressed and base64-encoded.

A probability p is stored as the byte ``round(255 sqrt(p))`` (the square root spends the byte's
levels where most weights are, near zero: the smallest non-zero level is 1.5e-5, the step near
p = 1 is 0.008). Each layer's ``(heads, Tq, Tk)`` block is zlib-compressed on its own, so the
page decodes only the layers it draws. The model view reads small thumbnails, each matrix
max-pooled to at most ``THUMB`` x ``THUMB`` cells, so no weight peak disappears.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

THUMB = 64
LABELS = {
    "self": "Self-attention",
    "encoder": "Encoder self-attention",
    "decoder": "Decoder self-attention",
    "cross": "Cross-attention (decoder to encoder)",
    "rollout": "Attention rollout up to each layer (Abnar & Zuidema 2020)",
}


def quantise(p: Tensor) -> Tensor:
    """Probabilities in [0, 1] as bytes ``round(255 sqrt(p))`` (negative entries, as Linformer's, count as 0)."""
    return (p.float().clamp(0, 1).sqrt() * 255).round().to(torch.uint8)


def dequantise(b: Tensor) -> Tensor:
    """The inverse of :func:`quantise`: ``(b / 255)^2``."""
    return (b.double() / 255) ** 2


def _blob(b: Tensor) -> str:
    return base64.b64encode(zlib.compress(b.contiguous().numpy().tobytes(), 1)).decode("ascii")


def thumbnails(layers: Sequence[Tensor], size: int = THUMB) -> Tensor:
    """``(L, H, S, S')`` max-pooled views of ``(H, Tq, Tk)`` weights, S = min(Tq, size), S' = min(Tk, size)."""
    out = []
    for w in layers:
        s = (min(w.shape[-2], size), min(w.shape[-1], size))
        out.append(F.adaptive_max_pool2d(w.double().clamp(min=0)[None], s)[0])
    return torch.stack(out)


@dataclass
class Group:
    """One attention group for the viewer.

    Attributes:
        name: ``self``, ``encoder``, ``decoder`` or ``cross``.
        layers: one ``(H, Tq, Tk)`` tensor per layer (one batch row), probabilities.
        q_tokens: the query tokens (rows).
        k_tokens: the key tokens (columns).
    """

    name: str
    layers: Sequence[Tensor]
    q_tokens: list[str]
    k_tokens: list[str]

    def payload(self) -> dict[str, Any]:
        """The group as the page reads it."""
        if not self.layers:
            raise ValueError(f"attention group {self.name!r} has no layers")
        h, tq, tk = self.layers[0].shape
        if (tq, tk) != (len(self.q_tokens), len(self.k_tokens)):
            raise ValueError(f"group {self.name!r}: weights of {tq} x {tk} for {len(self.q_tokens)} x {len(self.k_tokens)} tokens")
        thumbs = thumbnails(self.layers)
        return {
            "name": self.name,
            "label": LABELS.get(self.name, self.name),
            "q_tokens": self.q_tokens,
            "k_tokens": self.k_tokens,
            "n_layers": len(self.layers),
            "n_heads": h,
            "layers": [_blob(quantise(w)) for w in self.layers],
            "thumb": [int(thumbs.shape[-2]), int(thumbs.shape[-1])],
            "thumbs": _blob(quantise(thumbs)),
        }
