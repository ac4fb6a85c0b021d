"""Relative and rotary positions applied inside attention (the positional hook of
:class:`~attnkit.attention.MultiHeadAttention`); absolute sinusoidal and learned embeddings live in
:mod:`attnkit.layers.positional`."""

from attnkit.positions.rotary import RotaryEmbedding, half_to_interleaved, interleaved_to_half

__all__ = ["RotaryEmbedding", "half_to_interleaved", "interleaved_to_half"]
