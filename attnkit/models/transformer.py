"""The encoder-decoder Transformer of "Attention Is All You Need" (Vaswani et al. 2017, figure 1).

Source and target tokens are embedded (scaled by sqrt(d_model), section 3.4), given
positions (section 3.5) and dropout (section 5.4); the encoder stack reads the source,
the decoder stack reads the shifted target with causal self-attention and attends to
the encoder output; a linear layer (tied to the embeddings when the vocabulary is
shared, section 3.4) produces next-token logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnkit.attention.cache import LayerCache, make_caches
from attnkit.attention.masks import padding_bias, padding_mask
from attnkit.attention.registry import check_params, names as kernel_names
from attnkit.config import Config, check, pick_preset
from attnkit.layers.batchnorm import token_mask
from attnkit.layers.blocks import Decoder, Encoder, LayerSpec
from attnkit.layers.moe import MoEConfig
from attnkit.layers.norm import build_norm
from attnkit.layers.positional import TokenEmbedding, build_positions, check_ids
from attnkit.models.base import MAX_LAYERS, PretrainedModel, register_model
from attnkit.positions.config import PositionConfig, check_kernel


@dataclass(frozen=True, kw_only=True)
class AttentionConfig(Config):
    """Which kernel computes attention, and its parameters (``attnkit.attention.get(kind, **params)``);
    ``position``: the positions self-attention carries (:class:`~attnkit.positions.config.PositionConfig`)."""

    kind: str = "scaled_dot"
    dropout: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)
    position: PositionConfig = field(default_factory=PositionConfig)

    def validate(self) -> None:
        check(self.kind in kernel_names(), "attention.kind", self.kind, f"choose one of {', '.join(kernel_names())}")
        check(0.0 <= self.dropout < 1.0, "attention.dropout", self.dropout, "must be in [0, 1)")
        check_params(self.kind, self.params)
        check_kernel(self.position, self.kind)


@dataclass(frozen=True, kw_only=True)
class TransformerConfig(Config):
    """Sizes and choices of the encoder-decoder Transformer (defaults: the paper's base model, table 3)."""

    src_vocab_size: int = 32000
    tgt_vocab_size: int = 32000
    d_model: int = 512
    n_heads: int = 8
    d_ff: int = 2048
    n_encoder_layers: int = 6
    n_decoder_layers: int = 6
    dropout: float = 0.1
    activation_dropout: float = 0.0
    activation: Literal["relu", "gelu", "gelu_tanh", "gelu_sigmoid", "silu"] = "relu"
    norm_position: Literal["post", "pre"] = "post"
    norm_eps: float = 1e-5
    norm: Literal["layer", "rms", "batch"] = "layer"
    positional: Literal["sinusoidal", "learned"] = "sinusoidal"
    max_len: int = 1024
    share_embeddings: bool = True
    tie_output: bool = True
    scale_embeddings: bool = True
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    ffn: Literal["mlp", "switch", "gated"] = "mlp"  # gated: GEGLU/SwiGLU (Shazeer 2020), T5 v1.1's gated-gelu
    moe: MoEConfig = field(default_factory=MoEConfig)  # ffn="switch": the Switch layer (attnkit.layers.moe)
    # T5 (Raffel et al. 2020, section 2.1): no biases in any linear layer, and with embeddings tied to the
    # output layer the decoder's final state scaled by d_model**-0.5 before it (``output_scale``).
    bias: bool = True  # biases of the attention projections and the FFN
    output_scale: float = 1.0  # factor on the decoder's final hidden state before the output layer
    # BART (Lewis et al. 2020, section 2.1: the post-norm Transformer with GELU; its released code adds the rest):
    # a LayerNorm over embeddings + positions in both stacks (``embedding_norm``), learned positions of its own per
    # stack (``share_positions=False``; by default learned positions are one table when the embeddings are shared),
    # and a bias on the output layer (``output_bias``, Hugging Face's ``final_logits_bias``).
    embedding_norm: bool = False  # a norm (``norm``) after token embedding + position, before dropout
    share_positions: bool = True  # learned positions with shared embeddings: one table for both stacks
    output_bias: bool = False  # a bias vector on the output layer

    def validate(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "n_heads", "d_ff", "max_len"):
            check(getattr(self, name) > 0, name, getattr(self, name), "must be positive")
        for name in ("n_encoder_layers", "n_decoder_layers"):
            check(0 <= getattr(self, name) <= MAX_LAYERS, name, getattr(self, name), f"must be in [0, {MAX_LAYERS}]")
        check(self.d_model % self.n_heads == 0, "n_heads", self.n_heads, f"must divide d_model={self.d_model}")
        for name in ("dropout", "activation_dropout"):
            check(0.0 <= getattr(self, name) < 1.0, name, getattr(self, name), "must be in [0, 1)")
        check(self.norm_eps > 0, "norm_eps", self.norm_eps, "must be positive")
        check(self.output_scale > 0, "output_scale", self.output_scale, "must be positive")
        check(not self.embedding_norm or self.norm != "batch", "embedding_norm", True, "needs norm=layer or norm=rms")
        if self.share_embeddings:
            check(
                self.src_vocab_size == self.tgt_vocab_size,
                "share_embeddings",
                True,
                f"needs src_vocab_size == tgt_vocab_size (got {self.src_vocab_size} and {self.tgt_vocab_size})",
            )
        for name in ("pad_id", "bos_id", "eos_id"):
            v = getattr(self, name)
            check(0 <= v < self.tgt_vocab_size, name, v, f"must be a token id below tgt_vocab_size={self.tgt_vocab_size}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def layer_spec(self) -> LayerSpec:
        return LayerSpec.from_config(self, d_ff=self.d_ff, norm_position=self.norm_position, norm=self.norm, bias=self.bias)


PRESETS: dict[str, TransformerConfig] = {
    # Table 3 of the paper.
    "transformer-base": TransformerConfig(d_model=512, n_heads=8, d_ff=2048, n_encoder_layers=6, n_decoder_layers=6, dropout=0.1),
    "transformer-big": TransformerConfig(d_model=1024, n_heads=16, d_ff=4096, n_encoder_layers=6, n_decoder_layers=6, dropout=0.3),
    # Small models for tests, the demo and CPU experiments.
    "transformer-small": TransformerConfig(
        src_vocab_size=8000, tgt_vocab_size=8000, d_model=256, n_heads=4, d_ff=1024, n_encoder_layers=3, n_decoder_layers=3
    ),
    "transformer-tiny": TransformerConfig(
        src_vocab_size=64, tgt_vocab_size=64, d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2,
        dropout=0.0, max_len=128,
    ),
}


def preset(name: str, **overrides: Any) -> TransformerConfig:
    """Exact-name preset lookup, optionally with field overrides."""
    return pick_preset(PRESETS, name, "Transformer", **overrides)


@dataclass
class Seq2SeqOutput:
    """What :class:`Transformer` returns: logits and the two stacks' final hidden states."""

    logits: Tensor  # (B, Tt, V)
    encoder_hidden: Tensor  # (B, Ts, d_model)
    decoder_hidden: Tensor  # (B, Tt, d_model)
    attentions: dict[str, list[Any]] | None = None


def init_weights(module: nn.Module, d_model: int) -> None:
    """Xavier-uniform matrices (as the paper's reference tensor2tensor code), N(0, d^-1/2) embeddings."""
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            if "embedding" in name:
                nn.init.normal_(p, mean=0.0, std=d_model**-0.5)
            else:
                for w in p.unbind(0) if p.dim() == 3 else (p,):  # stacked Switch experts: each its own fans
                    nn.init.xavier_uniform_(w)


@register_model("transformer")
class Transformer(PretrainedModel):
    """Encoder-decoder Transformer; ``forward(src, tgt_in)`` returns next-token logits."""

    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = c = config
        spec = c.layer_spec()
        # The pad row is frozen at zero, unless the decoder starts from the pad id (T5: decoder_start = pad), whose row is a token's.
        pad_row = None if c.bos_id == c.pad_id else c.pad_id
        src_tok = nn.Embedding(c.src_vocab_size, c.d_model, padding_idx=pad_row)
        tgt_tok = src_tok if c.share_embeddings else nn.Embedding(c.tgt_vocab_size, c.d_model, padding_idx=pad_row)
        positional = c.positional if c.attention.position.kind == "none" else "none"  # positions in the attention replace them
        self.src_embed = TokenEmbedding(src_tok, build_positions(positional, c.d_model, c.max_len), c.dropout, c.scale_embeddings,
                                        norm=build_norm(c.norm, c.d_model, c.norm_eps) if c.embedding_norm else None)
        share_pos = positional == "learned" and c.share_embeddings and c.share_positions
        tgt_pos = self.src_embed.positions if share_pos else build_positions(positional, c.d_model, c.max_len)
        self.tgt_embed = TokenEmbedding(tgt_tok, tgt_pos, c.dropout, c.scale_embeddings,
                                        norm=build_norm(c.norm, c.d_model, c.norm_eps) if c.embedding_norm else None)
        self.encoder = Encoder(spec, c.n_encoder_layers)
        self.decoder = Decoder(spec, c.n_decoder_layers)
        self.lm_head = nn.Linear(c.d_model, c.tgt_vocab_size, bias=c.output_bias)
        init_weights(self, c.d_model)
        if c.output_bias:
            nn.init.zeros_(self.lm_head.bias)
        if c.tie_output:
            self.lm_head.weight = tgt_tok.weight
        if pad_row is not None:
            with torch.no_grad():
                src_tok.weight[c.pad_id].zero_()
                tgt_tok.weight[c.pad_id].zero_()

    # -- the two halves ------------------------------------------------------------------
    def source_mask(self, src: Tensor) -> Tensor:
        return padding_mask(src, self.config.pad_id)  # (B, 1, 1, Ts)

    def source_bias(self, src_mask: Tensor, like: Tensor) -> Tensor | None:
        """The source padding as one score bias for every encoder and cross-attention layer
        (:func:`~attnkit.attention.masks.padding_bias`), in the dtype the attention will run in
        (autocast's, else ``like``'s); None when the kernel takes no bias in place of a mask."""
        kernels = [layer.self_attn.kernel for layer in self.encoder.layers] + [layer.cross_attn.kernel for layer in self.decoder.layers]
        if not kernels or not all(getattr(k, "bias_as_mask", False) for k in kernels):
            return None
        kind = like.device.type
        dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else like.dtype
        return padding_bias(src_mask, dtype)

    def encode(
        self, src: Tensor, src_mask: Tensor | None = None, *, src_bias: Tensor | None = None, need_weights: bool = False
    ) -> tuple[Tensor, list]:
        """``src: (B, Ts)`` -> encoder output ``(B, Ts, d_model)`` and per-layer weights.

        ``src_bias`` (:meth:`source_bias`) replaces ``src_mask`` in every layer."""
        check_ids(src, self.config.src_vocab_size, "src")
        x = self.src_embed(src)
        if src_bias is not None:
            return self.encoder(x, None, bias=src_bias, need_weights=need_weights)
        if src_mask is None:
            src_mask = self.source_mask(src)
        return self.encoder(x, src_mask, need_weights=need_weights)

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_mask: Tensor | None,
        *,
        caches: list[LayerCache] | None = None,
        offset: int | None = None,
        src_bias: Tensor | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor, list]:
        """``tgt: (B, Tt)`` new target tokens -> ``(logits (B, Tt, V), hidden, weights)``.

        With ``caches``, ``tgt`` holds only the tokens after those already cached; ``offset``
        (the position of ``tgt[:, 0]``) defaults to the cached length. ``src_bias``
        (:meth:`source_bias`) replaces ``src_mask`` in every cross-attention layer.
        """
        if offset is None:
            offset = caches[0].self_attn.length if caches else 0
        # Targets are right-padded, so under the causal mask a real token never sees a pad
        # key; no padding mask is needed, which keeps SDPA on its causal (flash) path.
        check_ids(tgt, self.config.tgt_vocab_size, "tgt")
        h, weights = self.decoder(
            self.tgt_embed(tgt, offset), memory, memory_mask=None if src_bias is not None else src_mask, memory_bias=src_bias,
            caches=caches, need_weights=need_weights,
        )
        return self.lm_head(h if self.config.output_scale == 1.0 else h * self.config.output_scale), h, weights

    def forward(self, src: Tensor, tgt_in: Tensor, *, need_weights: bool = False) -> Seq2SeqOutput:
        """Teacher-forced pass. ``src: (B, Ts)``, ``tgt_in: (B, Tt)`` (BOS + target[:-1]).

        The source padding becomes one score bias shared by all encoder and cross-attention
        layers (:meth:`source_bias`) rather than a mask each layer converts and guards again;
        with ``need_weights`` the layers take the mask.
        """
        src_mask = self.source_mask(src)
        src_bias = None if need_weights else self.source_bias(src_mask, self.lm_head.weight)
        marks = self.config.norm == "batch" and self.training  # batch norms take statistics over the real tokens only
        pad = self.config.pad_id
        with token_mask(self.encoder, src != pad if marks else None), token_mask(self.decoder, tgt_in != pad if marks else None):
            memory, enc_w = self.encode(src, src_mask, src_bias=src_bias, need_weights=need_weights)
            logits, hidden, dec_w = self.decode(tgt_in, memory, src_mask, src_bias=src_bias, need_weights=need_weights)
        attn = None
        if need_weights:
            attn = {"encoder": enc_w, "decoder_self": [w[0] for w in dec_w], "decoder_cross": [w[1] for w in dec_w]}
        return Seq2SeqOutput(logits=logits, encoder_hidden=memory, decoder_hidden=hidden, attentions=attn)

    def new_caches(self, max_len: int) -> list[LayerCache]:
        """Empty per-layer KV caches for incremental decoding of up to ``max_len`` tokens."""
        return make_caches(self.config.n_decoder_layers, max_len)
