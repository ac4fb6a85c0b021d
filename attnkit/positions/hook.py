"""The positional hook of :class:`~attnkit.attention.MultiHeadAttention`: between the projections and the kernel.

* ``rotary`` rotates this step's queries and keys (before the keys enter a cache) and leaves the kernel;
* the bias kinds wrap the kernel: the call adds their score bias to the kernel's ``bias=`` argument
  (the dense and chunked paths), or, on CUDA for ALiBi and T5 (positions alone), passes it to
  FlexAttention as a ``score_mod`` with the kernel's block mask (:func:`attnkit.attention.flex.positional`),
  so sparse and windowed kernels keep skipping blocks and no ``(Tq, Tk)`` bias is built.

Positions are counted in the keys' frame (key j at j): the queries sit at ``cache.length + i`` for a
growing cache (0 without one) and at the cache slots of a static one. Within one row that differs
from position ids counted past left padding by a constant, which no relative position sees.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.positions.alibi import ALiBi
from attnkit.positions.base import ScoreBias
from attnkit.positions.config import PositionConfig, check_kernel
from attnkit.positions.relative import RelativeKey
from attnkit.positions.rotary import RotaryEmbedding
from attnkit.positions.t5_bias import T5RelativeBias
from attnkit.positions.xl import XLRelative


def build_position(config: PositionConfig, *, d_model: int, n_heads: int, head_dim: int, kernel: str) -> "PositionalHook | None":
    """The hook for ``config`` (None for kind ``none``).

    Args:
        config: the positional choice.
        d_model: model width (Transformer-XL's encoding width).
        n_heads: query heads.
        head_dim: features per head.
        kernel: the attention kernel's kind (a bias with a kernel that cannot take one is refused).

    Raises:
        ConfigError: a combination without meaning.
    """
    check_kernel(config, kernel)
    c = config
    if c.kind == "none":
        return None
    module: nn.Module
    if c.kind == "rotary":
        module = RotaryEmbedding(head_dim, c.rotary_dim, c.base, c.layout, None if c.scaling == "none" else c.scaling,
                                 c.factor, c.original_max_len)
    elif c.kind == "alibi":
        module = ALiBi(n_heads)
    elif c.kind == "t5_bias":
        module = T5RelativeBias(n_heads, c.n_buckets, c.max_distance, c.bidirectional, c.t5_train_path, c.t5_lr_scale)
    elif c.kind in ("relative_key", "relative_key_query"):
        module = RelativeKey(head_dim, c.max_distance, query=c.kind == "relative_key_query")
    else:
        module = XLRelative(d_model, n_heads, head_dim)
    return PositionalHook(c.kind, module)


class PositionalHook(nn.Module):
    """Applies one positional kind to a self-attention call (see the module docstring)."""

    def __init__(self, kind: str, module: nn.Module) -> None:
        super().__init__()
        self.kind, self.module = kind, module

    def forward(self, kernel: nn.Module, q: Tensor, k: Tensor, cache: Any = None, positions: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        """Return ``(q, k, kernel)`` for the cache's ``update``.

        Args:
            kernel: the layer's kernel.
            q: ``(B, H, Tq, D)`` this step's queries.
            k: ``(B, G, Tq, D)`` this step's keys.
            cache: the call's cache (its ``length`` or ``slots`` place the queries) or None.
            positions: rotary only: explicit positions ``(T,)`` or ``(B, T)`` instead of the keys' frame.
        """
        tq = q.shape[-2]
        slots = getattr(cache, "slots", None)
        offset: int | None = None if slots is not None else 0 if cache is None else int(cache.length)
        if isinstance(self.module, RotaryEmbedding):  # a contiguous range is a slice of the shared tables
            q, k = self.module(q, k, positions if positions is not None else slots if offset is None else offset)
            return q, k, kernel
        q_pos = slots if offset is None else torch.arange(offset, offset + tq, device=q.device)
        return q, k, BiasedKernel(kernel, self.module, q_pos, offset)  # type: ignore[arg-type]


class BiasedKernel:
    """A kernel call with a positional score bias added (the cache calls it as it calls the kernel)."""

    def __init__(self, kernel: nn.Module, position: ScoreBias, q_pos: Tensor, offset: int | None) -> None:
        self.kernel, self.position, self.q_pos, self.offset = kernel, position, q_pos, offset

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                 causal: bool = False, need_weights: bool = False) -> Any:
        from attnkit.attention import flex  # the attention package imports this module

        trains_in_flex = getattr(self.position, "trains_in_flex", None)
        flex_ok = trains_in_flex is None or trains_in_flex()
        if self.offset is not None and not need_weights and bias is None and flex.available(q) and flex_ok:
            flex_score_mod = getattr(self.position, "flex_score_mod", None)  # T5: the per-distance score_mod in training
            score_mod = (self.position.score_mod(self.offset, causal=causal) if flex_score_mod is None
                         else flex_score_mod(self.offset, q.shape[-2], k.shape[-2], causal=causal))
            if score_mod is not None:
                out = flex.positional(self.kernel, q, k, v, mask=mask, causal=causal, score_mod=score_mod)
                if out is not None:
                    return out
        # A static cache's slots (offset None) serve causal decoding, whose mask stands in for ``causal``.
        pos_bias = self.position.bias(q, k, self.q_pos, causal=causal or self.offset is None,
                                      scale=kernel_scale(self.kernel, q.shape[-1]), q_offset=self.offset)  # (B or 1, H, Tq, Tk)
        return self.kernel(q, k, v, mask=mask, bias=pos_bias if bias is None else bias + pos_bias, causal=causal,
                           need_weights=need_weights)


def kernel_scale(kernel: nn.Module, head_dim: int) -> float:
    """The factor the kernel puts on q k^T (its ``scale``, else 1/sqrt(d))."""
    scale = getattr(kernel, "scale", None)
    return float(scale) if isinstance(scale, (int, float)) else 1.0 / math.sqrt(head_dim)


def share_positions(attentions: list[nn.Module]) -> None:
    """Give every layer of a stack the first layer's T5 bias table, as T5 does (one table per stack).

    Args:
        attentions: the stack's self-attention modules, first layer first.
    """
    first = getattr(attentions[0], "position", None) if attentions else None
    if first is None or not isinstance(first.module, T5RelativeBias):
        return
    for attn in attentions[1:]:
        attn.position = first
