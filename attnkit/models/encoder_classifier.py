"""A Transformer encoder that classifies whole sequences: the Long Range Arena classifier.

Tay et al. 2020 ("Long Range Arena", section 3 and appendix) put every attention variant in the
same model: token embeddings plus positions, a stack of encoder layers whose self-attention is
the variant, a pooled vector (the mean over tokens, or a [CLS] token) and a small head:

    h = Encoder(Embed(x) + Pos)                       (B, T, d_model)
    z = mean over real tokens of h   (or h[:, 0])     (B, d_model)
    logits = W_2 relu(W_1 z)   (or W z)              (B, num_labels)

The encoder is :class:`attnkit.layers.blocks.Encoder`; the attention kernel is any registered
kind (``attention.kind`` / ``attention.params``). Padding: ``attention_mask`` (1 = real
token) becomes a key-padding mask ``(B, 1, 1, T)``, the form every long-sequence kernel
takes on its fast path; ``mask_padding=False`` leaves padded keys visible (they carry the
padding embedding) and only the pooling ignores them, which keeps sparse kernels on their
unmasked FlexAttention path on a GPU. Without an ``attention_mask`` no mask is used at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnkit.config import Config, check, pick_preset
from attnkit.layers.blocks import Encoder, LayerSpec
from attnkit.layers.pooling import mean_pool
from attnkit.layers.positional import build_positions, check_ids
from attnkit.models.base import MAX_LAYERS, PretrainedModel, init_normal, register_model
from attnkit.models.transformer import AttentionConfig


@dataclass(frozen=True, kw_only=True)
class EncoderClassifierConfig(Config):
    """Sizes and choices of the sequence classifier (defaults: LRA's ListOps model).

    ``max_len``: the most positions (learned positions have exactly that many).
    ``head_dim_ff``: width of the head's hidden layer; 0 gives a single linear layer.
    """

    vocab_size: int = 17
    num_labels: int = 10
    max_len: int = 2048
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 6
    d_ff: int = 2048
    dropout: float = 0.1
    activation: Literal["relu", "gelu", "gelu_tanh", "gelu_sigmoid"] = "gelu"
    norm_position: Literal["post", "pre"] = "pre"
    norm_eps: float = 1e-6
    positional: Literal["sinusoidal", "learned"] = "learned"
    pool: Literal["mean", "cls"] = "mean"
    head_dim_ff: int = 0
    mask_padding: bool = True
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    pad_id: int = 0
    init_std: float = 0.02

    def validate(self) -> None:
        for name in ("vocab_size", "num_labels", "max_len", "d_model", "n_heads", "n_layers", "d_ff"):
            check(getattr(self, name) > 0, name, getattr(self, name), "must be positive")
        check(self.n_layers <= MAX_LAYERS, "n_layers", self.n_layers, f"must be at most {MAX_LAYERS}")
        check(self.d_model % self.n_heads == 0, "n_heads", self.n_heads, f"must divide d_model={self.d_model}")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        check(self.head_dim_ff >= 0, "head_dim_ff", self.head_dim_ff, "must be >= 0 (0: a linear head)")
        check(0 <= self.pad_id < self.vocab_size, "pad_id", self.pad_id, f"must be a token id below vocab_size={self.vocab_size}")
        check(self.norm_eps > 0, "norm_eps", self.norm_eps, "must be positive")
        check(self.init_std > 0, "init_std", self.init_std, "must be positive")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def layer_spec(self) -> LayerSpec:
        return LayerSpec.from_config(self, d_ff=self.d_ff, norm_position=self.norm_position)


CLASSIFIER_PRESETS: dict[str, EncoderClassifierConfig] = {
    # LRA's ListOps configuration (Tay et al. 2020, appendix: 6 layers, d 512, 8 heads, MLP 2048).
    "lra-listops": EncoderClassifierConfig(),
    # A stated smaller model that trains in a few GPU minutes.
    "listops-small": EncoderClassifierConfig(d_model=128, n_heads=4, n_layers=4, d_ff=512, dropout=0.1),
    # For tests and CPU smoke runs.
    "listops-tiny": EncoderClassifierConfig(d_model=32, n_heads=2, n_layers=2, d_ff=64, dropout=0.0, max_len=512),
}


def classifier_preset(name: str, **overrides: Any) -> EncoderClassifierConfig:
    """Exact-name preset lookup, optionally with field overrides."""
    return pick_preset(CLASSIFIER_PRESETS, name, "classifier", **overrides)


@dataclass
class ClassifierOutput:
    """What :class:`EncoderClassifier` returns."""

    logits: Tensor  # (B, num_labels)
    pooled: Tensor  # (B, d_model)
    hidden: Tensor  # (B, T, d_model)


@register_model("encoder_classifier")
class EncoderClassifier(PretrainedModel):
    """Embeddings + positions -> encoder stack -> pooling -> head; ``forward(ids)`` returns class logits."""

    config_class = EncoderClassifierConfig

    def __init__(self, config: EncoderClassifierConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.positions = build_positions(c.positional, c.d_model, c.max_len)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = Encoder(c.layer_spec(), c.n_layers)
        if c.head_dim_ff:
            self.head: nn.Module = nn.Sequential(nn.Linear(c.d_model, c.head_dim_ff), nn.ReLU(), nn.Linear(c.head_dim_ff, c.num_labels))
        else:
            self.head = nn.Linear(c.d_model, c.num_labels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """N(0, init_std) matrices and embeddings, zero biases and padding embedding, unit LayerNorms."""
        init_normal(self, self.config.init_std, skip=("positions",))  # positions keep their own initialisation
        with torch.no_grad():
            self.tok_embed.weight[self.config.pad_id].zero_()

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None) -> ClassifierOutput:
        """Class logits for ``ids: (B, T)``.

        Args:
            attention_mask: ``(B, T)``, 1/True for real tokens, 0 for padding (on the right or
                anywhere); ``None``: every position is a real token.
        """
        c = self.config
        b, t = ids.shape
        if t > c.max_len:
            raise ValueError(f"{t} tokens exceed the model's max_len={c.max_len}; truncate the input")
        keep = attention_mask.bool() if attention_mask is not None else None  # (B, T)
        check_ids(ids, c.vocab_size, "input_ids")
        x = self.drop(self.tok_embed(ids) + self.positions.span(0, t))  # (B, T, d_model)
        mask = keep[:, None, None, :] if keep is not None and c.mask_padding else None  # (B, 1, 1, T)
        h, _ = self.encoder(x, mask)  # (B, T, d_model); a pre-norm stack ends with a LayerNorm
        pooled = h[:, 0] if c.pool == "cls" else mean_pool(h, keep)  # (B, d_model)
        return ClassifierOutput(logits=self.head(pooled), pooled=pooled, hidden=h)
