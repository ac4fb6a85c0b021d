"""Multi-head attention (Vaswani et al. 2017, section 3.2.2).

    MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
    head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V),   d_k = d_v = d_model / h

Self-attention projects Q, K and V with one fused ``(d_model, 3 d_model)`` matrix (the
layout of ``torch.nn.MultiheadAttention.in_proj_weight``); cross-attention projects the
queries from the decoder and K/V (fused) from the encoder output. The score-and-mix step
is any registered kernel (:mod:`attnkit.attention.registry`).

Grouped-query attention (Ainslie et al. 2023, "GQA", section 2.2): ``n_kv_heads`` key/value
heads, each shared by ``n_heads / n_kv_heads`` query heads; ``n_kv_heads=1`` is multi-query
attention (Shazeer 2019). The fused projection is then ``(d_model, (h + 2 g) d_k)``, queries
first, and the cache keeps ``g`` heads; with ``g = h`` it is the layout above.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from attnkit.attention.cache import NO_CACHE, AttentionCache
from attnkit.attention.heads import packed_heads
from attnkit.attention.registry import build
from attnkit.positions.config import PositionConfig
from attnkit.positions.hook import build_position


class MultiHeadAttention(nn.Module):
    """Projections, heads, caches and output projection around an attention kernel.

    Args:
        d_model: model width.
        n_heads: number of heads h; ``d_model`` must be divisible by it.
        cross: cross-attention (queries from ``x``, keys/values from ``context``).
        kind: kernel name from the registry; ``kernel_params`` are passed to it.
        dropout: attention-weight dropout inside the kernel.
        bias: whether the projections have biases.
        d_context: width of ``context`` for cross-attention (default ``d_model``).
        n_kv_heads: key/value heads g (grouped-query attention); must divide ``n_heads``;
            default ``n_heads``.
        out_bias: whether the output projection has a bias; default ``bias`` (Qwen2 has
            query/key/value biases and none on the output).
        position: the positional hook of self-attention (:mod:`attnkit.positions.hook`): rotary
            queries/keys or a score bias; None or kind ``none`` for none.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        cross: bool = False,
        kind: str = "scaled_dot",
        kernel_params: dict[str, Any] | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        d_context: int | None = None,
        n_kv_heads: int | None = None,
        out_bias: bool | None = None,
        position: PositionConfig | None = None,
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        g = n_heads if n_kv_heads is None else n_kv_heads
        if g <= 0 or n_heads % g:
            raise ValueError(f"n_kv_heads={n_kv_heads} must be positive and divide n_heads={n_heads}")
        self.d_model, self.n_heads, self.head_dim, self.cross = d_model, n_heads, d_model // n_heads, cross
        self.n_kv_heads, d_kv = g, g * (d_model // n_heads)
        if cross:
            self.q_proj = nn.Linear(d_model, d_model, bias=bias)
            self.kv_proj = nn.Linear(d_context or d_model, 2 * d_kv, bias=bias)
        else:
            self.qkv_proj = nn.Linear(d_model, d_model + 2 * d_kv, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias if out_bias is None else out_bias)
        params = dict(kernel_params or {})
        if dropout:
            params.setdefault("dropout", dropout)
        self.kernel = build(kind, head_dim=self.head_dim, n_heads=n_heads, params=params)
        self.position = None if cross or position is None else build_position(
            position, d_model=d_model, n_heads=n_heads, head_dim=self.head_dim, kernel=kind)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, d_k)

    def _split(self, x: Tensor, n: int) -> tuple[Tensor, ...]:
        """Packed projections ``(B, T, n_q h d_k + 2 g d_k)`` as heads: q (``n=3``) ``(B, H, T, d_k)``,
        then k and v ``(B, G, T, d_k)``."""
        g = self.n_kv_heads
        if g == self.n_heads:
            return packed_heads(x, n, self.n_heads)
        b, t, _ = x.shape
        sizes = (self.n_heads, g, g) if n == 3 else (g, g)
        parts = x.view(b, t, sum(sizes), self.head_dim).split(sizes, dim=2)  # (B, T, h|g, d_k) each
        return tuple(p.transpose(1, 2) for p in parts)  # (B, h|g, T, d_k)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        bias: Tensor | None = None,
        causal: bool = False,
        cache: AttentionCache | None = None,
        need_weights: bool = False,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from ``x: (B, Tq, d_model)`` to itself or to ``context: (B, Tk, d_context)``.

        Args:
            mask: boolean, broadcastable to ``(B, H, Tq, Tk)``, True = may attend.
            bias: float score bias broadcastable to ``(B, H, Tq, Tk)``.
            causal: apply the (bottom-right aligned) causal mask.
            cache: any cache of the :class:`~attnkit.attention.cache.AttentionCache` protocol; it
                stores this call's keys and values and calls the kernel on what it keeps
                (a :class:`~attnkit.attention.cache.KVCache` the growing keys, a
                :class:`~attnkit.attention.cache.StaticKV` the encoder's, computed once, a
                :class:`~attnkit.attention.linear.RecurrentCache` a fixed-size state).
            need_weights: also return the ``(B, H, Tq, Tk)`` attention weights.
            positions: ``(Tq,)`` or ``(B, Tq)`` rotary positions of this step; default: counted
                from the cache (see :mod:`attnkit.positions.hook`).

        Returns:
            ``(out: (B, Tq, d_model), weights or None)``.
        """
        b, tq, _ = x.shape
        kernel = self.kernel
        if self.cross:
            q = self._heads(self.q_proj(x))  # (B, H, Tq, d_k)

            def new_kv() -> tuple[Tensor, Tensor]:
                if context is None:
                    raise ValueError("cross-attention needs a context (the encoder output)")
                k, v = self._split(self.kv_proj(context), 2)  # 2 x (B, G, Tk, d_k)
                return k, v

        else:
            extend = getattr(cache, "extend", None)  # Transformer-XL memory (attnkit.attention.memory): k, v over [memory; x]
            q, k, v = self._split(self.qkv_proj(x if extend is None else extend(x)), 3)  # (B, H, M+T, d_k), 2 x (B, G, M+T, d_k)
            if extend is not None:
                q = q[:, :, -tq:]  # (B, H, T, d_k): the memory's positions are keys only
            if self.position is not None:  # rotated q/k, or the kernel adding a positional score bias
                q, k, kernel = self.position(kernel, q, k, cache, positions)

            def new_kv() -> tuple[Tensor, Tensor]:
                return k, v

        res = (NO_CACHE if cache is None else cache).update(
            kernel, q, new_kv, mask=mask, bias=bias, causal=causal, need_weights=need_weights
        )
        out, weights = res if need_weights else (res, None)
        out = out.transpose(1, 2).reshape(b, tq, self.d_model)  # (B, Tq, d_model)
        return self.out_proj(out), weights
