"""Encoder and decoder layers and their stacks (Vaswani et al. 2017, section 3.1, figure 1).

Encoder layer: self-attention, then the position-wise FFN, each wrapped in a residual
connection with LayerNorm. Decoder layer: masked (causal) self-attention, cross-attention
whose keys and values are the encoder output, then the FFN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from attnkit.attention.cache import KVCache, LayerCache
from attnkit.attention.multihead import MultiHeadAttention
from attnkit.layers.ffn import build_ffn
from attnkit.layers.norm import build_norm
from attnkit.layers.residual import Residual
from attnkit.positions.config import PositionConfig
from attnkit.positions.hook import share_positions


@dataclass(frozen=True)
class LayerSpec:
    """The sizes and choices shared by every layer of a stack."""

    d_model: int
    n_heads: int
    d_ff: int
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "relu"
    norm_position: str = "post"
    norm_eps: float = 1e-5
    attention_kind: str = "scaled_dot"
    attention_params: dict[str, Any] | None = None
    bias: bool = True
    n_kv_heads: int | None = None  # grouped-query attention; None: n_heads
    qkv_bias: bool | None = None  # biases of the q/k/v projections; None: bias
    norm: str = "layer"  # layer | rms
    ffn_kind: str = "mlp"  # mlp | gated (SwiGLU, GEGLU)
    position: PositionConfig | None = None  # the self-attention's positional hook (attnkit.positions)
    moe: Any = None  # ffn_kind="switch": the attnkit.layers.moe.MoEConfig

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> "LayerSpec":
        """Read the fields every model config shares (``d_model``, ``n_heads``, ``dropout``,
        ``activation``, ``norm_eps``, ``attention.{kind, dropout, params}``, and
        ``activation_dropout`` where present); ``overrides`` set the rest (``d_ff``,
        ``norm_position``, ``bias``)."""
        fields: dict[str, Any] = dict(
            d_model=config.d_model,
            n_heads=config.n_heads,
            dropout=config.dropout,
            activation=config.activation,
            norm_eps=config.norm_eps,
            attention_dropout=config.attention.dropout,
            attention_kind=config.attention.kind,
            attention_params=dict(config.attention.params),
            position=getattr(config.attention, "position", None),
        )
        if hasattr(config, "activation_dropout"):
            fields["activation_dropout"] = config.activation_dropout
        if hasattr(config, "moe"):  # the FFN choice of a config with a mixture of experts (ffn="switch")
            fields.update(ffn_kind=config.ffn, moe=config.moe)
        fields.update(overrides)
        return cls(**fields)

    def attention(self, cross: bool = False) -> MultiHeadAttention:
        return MultiHeadAttention(
            self.d_model,
            self.n_heads,
            cross=cross,
            kind=self.attention_kind,
            kernel_params=self.attention_params,
            dropout=self.attention_dropout,
            bias=self.bias if self.qkv_bias is None else self.qkv_bias,
            n_kv_heads=self.n_kv_heads,
            out_bias=self.bias,
            position=self.position,
        )

    def ffn(self) -> nn.Module:
        if self.ffn_kind == "switch":
            from attnkit.layers.moe import SwitchFFN

            return SwitchFFN(self.d_model, self.d_ff, self.activation, self.activation_dropout, self.bias, self.moe)
        return build_ffn(self.ffn_kind, self.d_model, self.d_ff, self.activation, self.activation_dropout, self.bias)

    def residual(self) -> Residual:
        return Residual(self.d_model, self.dropout, self.norm_position, self.norm_eps, self.norm)

    def final_norm(self) -> nn.Module:
        """The LayerNorm (or RMSNorm) after a pre-norm stack; the identity after a post-norm one."""
        return build_norm(self.norm, self.d_model, self.norm_eps) if self.norm_position == "pre" else nn.Identity()


class EncoderLayer(nn.Module):
    """x -> Residual(SelfAttention) -> Residual(FFN)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.self_attn = spec.attention()
        self.ffn = spec.ffn()
        self.res_attn = spec.residual()
        self.res_ffn = spec.residual()

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        bias: Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """``cache``: the self-attention KV cache of a causal (decoder-only) stack; ``bias``: a
        float score bias for the self-attention (see :class:`~attnkit.attention.MultiHeadAttention`)."""
        weights: list[Tensor | None] = [None]

        def attend(h: Tensor) -> Tensor:
            out, weights[0] = self.self_attn(h, mask=mask, bias=bias, causal=causal, cache=cache, need_weights=need_weights)
            return out

        x = self.res_attn(x, attend)  # (B, T, d_model)
        x = self.res_ffn(x, self.ffn)
        return x, weights[0]


class DecoderLayer(nn.Module):
    """x -> Residual(causal SelfAttention) -> Residual(CrossAttention to memory) -> Residual(FFN)."""

    def __init__(self, spec: LayerSpec) -> None:
        super().__init__()
        self.self_attn = spec.attention()
        self.cross_attn = spec.attention(cross=True)
        self.ffn = spec.ffn()
        self.res_self = spec.residual()
        self.res_cross = spec.residual()
        self.res_ffn = spec.residual()

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        *,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        memory_bias: Tensor | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """``memory_bias``: a float score bias for the cross-attention (instead of, or with, ``memory_mask``)."""
        w: list[Tensor | None] = [None, None]

        def self_attend(h: Tensor) -> Tensor:
            kv = cache.self_attn if cache is not None else None
            out, w[0] = self.self_attn(h, mask=self_mask, causal=True, cache=kv, need_weights=need_weights)
            return out

        def cross_attend(h: Tensor) -> Tensor:
            kv = cache.cross_attn if cache is not None else None
            out, w[1] = self.cross_attn(h, memory, mask=memory_mask, bias=memory_bias, cache=kv, need_weights=need_weights)
            return out

        x = self.res_self(x, self_attend)  # (B, T, d_model)
        x = self.res_cross(x, cross_attend)
        x = self.res_ffn(x, self.ffn)
        return x, (w[0], w[1])


class Encoder(nn.Module):
    """N encoder layers; a pre-norm stack ends with a LayerNorm."""

    def __init__(self, spec: LayerSpec, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(spec) for _ in range(n_layers))
        share_positions([layer.self_attn for layer in self.layers])  # T5: one bias table per stack
        self.norm = spec.final_norm()

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        bias: Tensor | None = None,
        causal: bool = False,
        caches: list[KVCache] | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[Tensor | None]]:
        """``caches``: one self-attention KV cache per layer (a causal stack decoding incrementally);
        ``bias``: one float score bias shared by every layer, prepared once by the caller."""
        weights = []
        for i, layer in enumerate(self.layers):
            cache = caches[i] if caches is not None else None
            x, w = layer(x, mask, bias=bias, causal=causal, cache=cache, need_weights=need_weights)
            weights.append(w)
        return self.norm(x), weights


class Decoder(nn.Module):
    """N decoder layers; a pre-norm stack ends with a LayerNorm."""

    def __init__(self, spec: LayerSpec, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(spec) for _ in range(n_layers))
        share_positions([layer.self_attn for layer in self.layers])  # T5: one bias table per stack
        self.norm = spec.final_norm()

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        *,
        self_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        memory_bias: Tensor | None = None,
        caches: list[LayerCache] | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, list[tuple[Tensor | None, Tensor | None]]]:
        """``memory_bias``: one float score bias for every layer's cross-attention, prepared once by the caller."""
        weights = []
        for i, layer in enumerate(self.layers):
            x, w = layer(
                x,
                memory,
                self_mask=self_mask,
                memory_mask=memory_mask,
                memory_bias=memory_bias,
                cache=caches[i] if caches is not None else None,
                need_weights=need_weights,
            )
            weights.append(w)
        return self.norm(x), weights
