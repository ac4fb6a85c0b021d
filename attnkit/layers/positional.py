"""Absolute positional encodings.

* Sinusoidal (Vaswani et al. 2017, section 3.5):
      PE(pos, 2i)   = sin(pos / 10000^(2i / d_model))
      PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model))
* Learned absolute position embeddings (BERT, Devlin et al. 2019, section 3; the
  Transformer paper's table 3 row (E) finds them nearly identical to sinusoids).

Both map positions ``(T,)`` or ``(B, T)`` to vectors that are added to the token embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def check_ids(ids: Tensor, vocab_size: int, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when an id of ``ids`` is outside ``[0, vocab_size)``.

    An embedding lookup (a row gather) with such an id fails deep inside ``nn.Embedding``
    with an ``IndexError`` on the CPU and a device-side assert on a GPU. The check is one
    min/max reduction whose result the host must read, so it runs only where that read
    costs nothing: on CPU tensors. On an accelerator, where the read would stall every step
    of training and decoding, the commands check the tokenizer against the model instead
    (:func:`attnkit.data.tokenizer.check_against_model`); the check is also skipped while
    ``torch.compile`` traces.

    Args:
        ids: integer ids of any shape.
        vocab_size: the number of rows of the embedding table.
        name: the argument's name for the message (``input_ids``, ``segment_ids``, ...).
    """
    if ids.numel() == 0 or ids.device.type != "cpu" or torch.compiler.is_compiling():
        return
    lo, hi = torch.aminmax(ids)
    if int(lo) < 0 or int(hi) >= vocab_size:
        bad = int(lo) if int(lo) < 0 else int(hi)
        raise ValueError(f"{name} holds id {bad}, outside the vocabulary of {vocab_size} (ids must be in 0..{vocab_size - 1})")


def sinusoid_table(max_len: int, d_model: int) -> Tensor:
    """The ``(max_len, d_model)`` table of section 3.5 (odd ``d_model`` drops the last cosine)."""
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d/2),)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # (T, ceil(d/2))
    table = torch.zeros(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.float()


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal encodings (section 3.5); no parameters, extrapolates to any length."""

    def __init__(self, d_model: int, max_len: int = 4096) -> None:
        super().__init__()
        self.d_model = d_model
        self.register_buffer("table", sinusoid_table(max_len, d_model), persistent=False)

    def _grow(self, need: int) -> None:
        if need > self.table.shape[0]:  # grow on demand: the formula has no length limit
            self.table = sinusoid_table(max(need, 2 * self.table.shape[0]), self.d_model).to(self.table.device)

    def forward(self, positions: Tensor) -> Tensor:
        """``positions: (T,)`` or ``(B, T)`` -> ``(..., T, d_model)``."""
        self._grow(int(positions.max()) + 1 if positions.numel() else 0)
        return self.table[positions]

    def span(self, start: int, length: int) -> Tensor:
        """Encodings of positions ``start .. start+length-1`` as ``(T, d_model)``, without a device sync."""
        self._grow(start + length)
        return self.table[start : start + length]


class LearnedPositions(nn.Module):
    """Learned absolute position embeddings (BERT); at most ``max_len`` positions."""

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        self.max_len = max_len
        self.embedding = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, positions: Tensor) -> Tensor:
        if positions.numel() and int(positions.max()) >= self.max_len:
            raise ValueError(
                f"sequence of {int(positions.max()) + 1} positions is longer than max_len={self.max_len} "
                "of the learned position embeddings; truncate the input or build the model with a larger max_len"
            )
        return self.embedding(positions)

    def span(self, start: int, length: int) -> Tensor:
        """Embeddings of positions ``start .. start+length-1`` as ``(T, d_model)``."""
        if start + length > self.max_len:
            raise ValueError(
                f"sequence of {start + length} positions is longer than max_len={self.max_len} "
                "of the learned position embeddings; truncate the input or build the model with a larger max_len"
            )
        return self.embedding.weight[start : start + length]


class NoPositions(nn.Module):
    """No absolute positions: for models whose attention carries them (:mod:`attnkit.positions`)."""

    def span(self, start: int, length: int) -> float:
        """Nothing to add."""
        return 0.0


def build_positions(kind: str, d_model: int, max_len: int) -> nn.Module:
    """``"sinusoidal"``, ``"learned"`` or ``"none"`` (:class:`NoPositions`)."""
    if kind == "none":
        return NoPositions()
    if kind == "sinusoidal":
        return SinusoidalPositions(d_model, max_len)
    if kind == "learned":
        return LearnedPositions(d_model, max_len)
    raise ValueError(f"positional={kind!r} is not one of 'sinusoidal', 'learned'")


class TokenEmbedding(nn.Module):
    """Token embedding scaled by sqrt(d_model) (section 3.4), plus positions and dropout (section 5.4).

    ``norm``: a normalisation of the sum before dropout (BART's ``layernorm_embedding``, Lewis et al. 2020,
    as BERT's embedding LayerNorm); None: none."""

    def __init__(self, embedding: nn.Embedding, positions: nn.Module, dropout: float, scale: bool = True,
                 norm: nn.Module | None = None) -> None:
        super().__init__()
        self.embedding = embedding
        self.positions = positions
        self.scale = math.sqrt(embedding.embedding_dim) if scale else 1.0
        self.norm = norm
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: Tensor, offset: int = 0) -> Tensor:
        """``ids: (B, T)`` -> ``(B, T, d_model)``; ``offset`` is the first position (cached decoding)."""
        x = self.embedding(ids) * self.scale + self.positions.span(offset, ids.shape[1])  # (B, T, d_model)
        if self.norm is not None:
            x = self.norm(x)
        return self.dropout(x) if self.training else x
