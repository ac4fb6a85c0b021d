"""Building blocks shared by every model: positions, FFN, residual+norm, encoder/decoder layers."""

from attnkit.layers.blocks import Decoder, DecoderLayer, Encoder, EncoderLayer, LayerSpec
from attnkit.layers.ffn import ACTIVATIONS, FeedForward, activation
from attnkit.layers.positional import LearnedPositions, SinusoidalPositions, TokenEmbedding, build_positions, sinusoid_table
from attnkit.layers.residual import Residual

__all__ = [
    "ACTIVATIONS",
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "LayerSpec",
    "LearnedPositions",
    "Residual",
    "SinusoidalPositions",
    "TokenEmbedding",
    "activation",
    "build_positions",
    "sinusoid_table",
]
