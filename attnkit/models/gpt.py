"""Decoder-only language model in the GPT-2 shape (Radford et al. 2019, section 2.3).

A stack of self-attention + FFN layers run under the causal mask (the decoder of
Vaswani et al. 2017 without cross-attention), with the GPT-2 choices:

* learned absolute positions added to unscaled token embeddings;
* pre-norm residuals (LayerNorm moved to each sub-block's input) and a final LayerNorm
  after the last layer ("Layer normalization was moved to the input of each sub-block ...
  and an additional layer normalization was added after the final self-attention block");
* GELU with the tanh approximation in the FFN, d_ff = 4 d_model;
* output logits from the transposed token-embedding matrix (tied weights);
* initialisation N(0, 0.02), with the weights of the two projections that write into the
  residual stream (attention ``out_proj``, FFN ``w2``) scaled by 1/sqrt(2N) for N layers
  (the paper: "we scale the weights of residual layers at initialization by a factor of
  1/sqrt(N)"; with two residual layers per block, N counts 2 per block, as the Hugging Face
  GPT-2 implementation does).

The same config expresses the Llama family's choices (Touvron et al. 2023, "LLaMA", section
2.2): RMSNorm before each sub-layer (``norm="rms"``), the SwiGLU FFN (``ffn="gated"``,
``activation="silu"``), rotary positions instead of learned ones (``attention.position.kind="rotary"``), no
biases, untied output embeddings; grouped-query attention (``n_kv_heads``, Ainslie et al. 2023)
as Llama 2 70B and later models use it; Mistral's sliding window (Jiang et al. 2023, section 2:
each token sees the ``window`` most recent positions, itself included); Qwen2's q/k/v biases
(``qkv_bias``). Rotary positions are ``attention.position`` (:mod:`attnkit.positions`); a model
whose attention carries positions has no learned position embeddings. The ``llama-*`` presets
are such models.

The stack reuses :class:`attnkit.layers.blocks.Encoder` (self-attention + FFN layers); with
``causal=True`` it is the GPT decoder. Checkpoint names are attnkit's; the Hugging Face GPT-2
key map lives in :mod:`attnkit.hub.gpt2`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnkit.attention.cache import KVCache
from attnkit.attention.linear import LinearAttention, RecurrentCache
from attnkit.attention.memory import XLMemory, new_memories
from attnkit.config import Config, check, pick_preset
from attnkit.layers.blocks import Encoder, LayerSpec
from attnkit.layers.moe import MoEConfig
from attnkit.layers.norm import RMSNorm
from attnkit.layers.positional import LearnedPositions, check_ids
from attnkit.models.base import MAX_LAYERS, PretrainedModel, init_normal, register_model
from attnkit.models.transformer import AttentionConfig
from attnkit.positions.config import PositionConfig


@dataclass(frozen=True, kw_only=True)
class GPTConfig(Config):
    """Sizes and choices of a GPT model (defaults: GPT-2 small, 124M parameters).

    ``d_ff=None`` means 4 * d_model. ``dropout`` is applied to the embeddings and to each
    residual branch (GPT-2's ``embd_pdrop``/``resid_pdrop``); ``attention.dropout`` to the
    attention weights.

    The modern-decoder choices: ``n_kv_heads`` key/value heads (grouped-query attention; null:
    ``n_heads``); ``norm`` ``layer`` or ``rms``; ``ffn`` ``mlp``, ``gated`` (SwiGLU with
    ``activation="silu"``, GEGLU with ``gelu``) or ``switch`` (a Switch mixture of experts, ``moe``); ``qkv_bias`` the q/k/v projections' biases
    (null: ``bias``, which sets every other linear layer's); ``window`` the causal
    sliding window in positions (null: none); ``tie_embeddings`` the output layer shares the token
    embeddings.
    """

    vocab_size: int = 50257
    context: int = 1024
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int | None = None
    dropout: float = 0.0
    activation: Literal["relu", "gelu", "gelu_tanh", "gelu_sigmoid", "silu"] = "gelu_tanh"
    norm_eps: float = 1e-5
    bias: bool = True
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    init_std: float = 0.02
    n_kv_heads: int | None = None
    norm: Literal["layer", "rms"] = "layer"
    ffn: Literal["mlp", "gated", "switch"] = "mlp"
    moe: MoEConfig = field(default_factory=MoEConfig)  # ffn="switch": the Switch layer (attnkit.layers.moe)
    qkv_bias: bool | None = None
    window: int | None = None
    tie_embeddings: bool = True

    def validate(self) -> None:
        for name in ("vocab_size", "context", "d_model", "n_heads", "n_layers"):
            check(getattr(self, name) > 0, name, getattr(self, name), "must be positive")
        check(self.n_layers <= MAX_LAYERS, "n_layers", self.n_layers, f"must be at most {MAX_LAYERS}")
        check(self.d_ff is None or self.d_ff > 0, "d_ff", self.d_ff, "must be positive (or null for 4 * d_model)")
        check(self.d_model % self.n_heads == 0, "n_heads", self.n_heads, f"must divide d_model={self.d_model}")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        check(self.norm_eps > 0, "norm_eps", self.norm_eps, "must be positive")
        check(self.init_std > 0, "init_std", self.init_std, "must be positive")
        g = self.kv_heads
        check(0 < g and self.n_heads % g == 0, "n_kv_heads", self.n_kv_heads, f"must divide n_heads={self.n_heads}")
        check(self.window is None or self.window > 0, "window", self.window, "must be positive (or null for none)")

    @property
    def ffn_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def learned_positions(self) -> bool:
        """Whether positions are learned embeddings added to the input (the attention carries none)."""
        position = getattr(self.attention, "position", None)
        return position is None or position.kind == "none"

    @property
    def kv_heads(self) -> int:
        """Key/value heads (``n_heads`` unless grouped-query attention)."""
        return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

    def layer_spec(self) -> LayerSpec:
        return LayerSpec.from_config(
            self, d_ff=self.ffn_dim, norm_position="pre", bias=self.bias, n_kv_heads=self.n_kv_heads,
            qkv_bias=self.qkv_bias, norm=self.norm, ffn_kind=self.ffn,
        )


_LLAMA: dict[str, Any] = dict(norm="rms", norm_eps=1e-6, ffn="gated", activation="silu", bias=False, tie_embeddings=False,
                              attention=AttentionConfig(position=PositionConfig(kind="rotary")))

GPT_PRESETS: dict[str, GPTConfig] = {
    # Radford et al. 2019, table 2 (the released 124M and 355M models).
    "gpt2": GPTConfig(),
    "gpt2-medium": GPTConfig(d_model=1024, n_heads=16, n_layers=24),
    # nanoGPT's character-level tiny Shakespeare baseline (config/train_shakespeare_char.py):
    # dropout 0.2 on embeddings, residual branches and attention weights, as nanoGPT applies it;
    # the vocabulary is set from the text when training.
    "char-shakespeare": GPTConfig(
        vocab_size=65, context=256, d_model=384, n_heads=6, n_layers=6, dropout=0.2, attention=AttentionConfig(dropout=0.2)
    ),
    # For tests and CPU experiments.
    "gpt-tiny": GPTConfig(vocab_size=96, context=64, d_model=64, n_heads=4, n_layers=2),
    # The Llama family's layer (Touvron et al. 2023): pre-RMSNorm, SwiGLU, rotary, no biases, untied
    # output; grouped-query attention with a third of the heads for keys and values.
    "llama-124m": GPTConfig(**_LLAMA, vocab_size=32000, context=1024, d_model=768, n_heads=12, n_kv_heads=4,
                            n_layers=12, d_ff=2048),
    # nanoGPT's character-level Shakespeare shape, Llama layers (d_ff = 8/3 d_model, as LLaMA sizes SwiGLU).
    "llama-char": GPTConfig(**_LLAMA, vocab_size=65, context=256, d_model=384, n_heads=6, n_kv_heads=2, n_layers=6,
                            d_ff=1024, dropout=0.2),
    "llama-tiny": GPTConfig(**_LLAMA, vocab_size=96, context=64, d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, d_ff=172),
}


def gpt_preset(name: str, **overrides: Any) -> GPTConfig:
    """Exact-name GPT preset lookup, optionally with field overrides."""
    return pick_preset(GPT_PRESETS, name, "GPT", **overrides)


@dataclass
class LMOutput:
    """What :class:`GPT` returns."""

    logits: Tensor  # (B, T, V)
    hidden: Tensor  # (B, T, d_model), after the final LayerNorm
    attentions: list[Any] | None = None


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions ``(B, T)`` counting only real tokens (0 for the left padding), from a 1/0 mask."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@register_model("gpt")
class GPT(PretrainedModel):
    """Decoder-only Transformer language model; ``forward(ids)`` returns next-token logits."""

    config_class = GPTConfig

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = c = config
        self.tok_embed = nn.Embedding(c.vocab_size, c.d_model)
        self.positions = LearnedPositions(c.d_model, c.context) if c.learned_positions else None
        self.drop = nn.Dropout(c.dropout)
        self.decoder = Encoder(c.layer_spec(), c.n_layers)  # pre-norm: ends with the final LayerNorm
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.reset_parameters()
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_embed.weight

    def reset_parameters(self) -> None:
        """GPT-2 initialisation: N(0, std) matrices and embeddings, zero biases, residual writers / sqrt(2N)."""
        std = self.config.init_std
        init_normal(self, std)
        for m in self.modules():
            if isinstance(m, RMSNorm):
                nn.init.ones_(m.weight)
        for layer in self.decoder.layers:
            for proj in (layer.self_attn.out_proj, *(f.w2 for f in getattr(layer.ffn, "experts", [layer.ffn]))):  # each Switch expert too
                nn.init.normal_(proj.weight, mean=0.0, std=std / math.sqrt(2 * self.config.n_layers))

    def _window_mask(self, offset: int, t: int, device: torch.device) -> Tensor:
        """``(T, offset + T)``: True where key slot j is among the ``window`` most recent of query slot i."""
        q = torch.arange(offset, offset + t, device=device)[:, None]  # (T, 1)
        k = torch.arange(offset + t, device=device)[None, :]  # (1, T_keys)
        return q - k < self.config.window  # (T, T_keys); the causal half is the kernel's

    def forward(
        self,
        ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        positions: Tensor | None = None,
        caches: list[KVCache] | None = None,
        need_weights: bool = False,
    ) -> LMOutput:
        """Next-token logits for ``ids: (B, T)``.

        Args:
            attention_mask: ``(B, T_keys)``, 1/True for real tokens, 0 for padding (left
                padding for batched prompts). With ``caches`` it covers the cached keys too.
            positions: ``(B, T)`` position ids of the learned embeddings; default: counted from
                the first real token of each row when ``attention_mask`` is given, else ``cached
                length + arange(T)``. Positions inside attention (rotary, relative biases) are
                counted by the attention from the cache (:mod:`attnkit.positions.hook`): only
                differences between positions reach the scores, which left padding does not change.
            caches: one :class:`KVCache` per layer (see :meth:`new_caches`); the new keys
                and values are appended.
            need_weights: also return each layer's attention weights.
        """
        b, t = ids.shape
        offset = caches[0].length if caches else 0
        if offset + t > self.config.context:
            raise ValueError(
                f"{offset + t} tokens exceed the model's context of {self.config.context}; truncate the input"
            )
        mask = None
        if attention_mask is not None:
            keep = attention_mask.bool()
            if positions is None:
                positions = positions_from_mask(keep)[:, -t:]  # (B, T)
            mask = keep[:, None, None, :]  # (B, 1, 1, T_keys)
        if self.config.window is not None:
            win = self._window_mask(offset, t, ids.device)[None, None]  # (1, 1, T, T_keys)
            mask = win if mask is None else mask & win
        check_ids(ids, self.config.vocab_size, "input_ids")
        x = self.tok_embed(ids)  # (B, T, d_model)
        if self.positions is not None:
            x = x + (self.positions.span(offset, t) if positions is None else self.positions.embedding(positions))
        x = self.drop(x)  # (B, T, d_model)
        h, weights = self.decoder(x, mask, causal=True, caches=caches, need_weights=need_weights)
        return LMOutput(logits=self.lm_head(h), hidden=h, attentions=weights if need_weights else None)

    def next_token_logits(self, ids: Tensor, positions: Tensor, mask: Tensor | None, caches: list[KVCache],
                          bias: Tensor | None = None) -> Tensor:
        """Logits ``(B, V)`` after the last of ``ids: (B, T)``, for decoding over a fixed-size cache.

        ``positions: (B, T)`` are explicit and ``mask`` (boolean, broadcastable to
        ``(B, H, T, T_keys)``) replaces the causal mask; or ``bias`` (0 / -inf, the same shape)
        does, when every query is known to see at least one key. There are no Python-side checks
        and no data-dependent shapes, so :func:`attnkit.generation.sampling.decode_one_token`
        compiles to a single graph.
        """
        x = self.tok_embed(ids)  # (B, T, d_model)
        if self.positions is not None:
            x = x + self.positions.embedding(positions)
        h, _ = self.decoder(self.drop(x), mask, bias=bias, causal=False, caches=caches)  # (B, T, d_model)
        return self.lm_head(h[:, -1])  # (B, V)

    @property
    def recurrent(self) -> bool:
        """Whether the attention is causal linear attention, decoded as an RNN (a fixed-size state per layer)."""
        return isinstance(self.decoder.layers[0].self_attn.kernel, LinearAttention)

    def new_caches(self, max_len: int | None = None) -> list[KVCache] | list[RecurrentCache]:
        """Empty caches, one per layer: growing KV caches (capacity ``max_len``, default the
        context), or for linear attention the fixed-size recurrent state (``max_len`` unused)."""
        if self.recurrent:
            return [RecurrentCache() for _ in range(self.config.n_layers)]
        return [KVCache(max_len or self.config.context) for _ in range(self.config.n_layers)]  # (B, n_kv_heads, T, d_k) once filled

    def new_memories(self, mem_len: int) -> list[XLMemory]:
        """Empty Transformer-XL memories (:mod:`attnkit.attention.memory`), one per layer, each keeping the
        last ``mem_len`` inputs of its layer; pass them as ``caches`` to successive segments of a stream.
        A segment of T tokens then attends to at most ``mem_len + T`` keys, which must fit ``context``.

        Raises:
            ConfigError: positions that do not follow the memory (learned absolute or rotary ones);
                the memory needs a relative score bias such as ``xl_relative``.
        """
        from attnkit.errors import ConfigError

        position = self.config.attention.position
        if not position.adds_bias:
            raise ConfigError(f"Transformer-XL memory needs relative positions inside attention (e.g. "
                              f"model.attention.position.kind=xl_relative), not {position.kind!r}")
        return new_memories(self.config.n_layers, mem_len)
