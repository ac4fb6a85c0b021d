"""Two-level hierarchical attention: exact inside a block, coarse across blocks (kind ``hierarchical``).

The keys are cut into blocks of ``block`` positions (key j is in block j // block). Query i, at key
position p_i, attends in one softmax to

* the keys of its own block p_i // block that it may see (the mask; under ``causal`` the earlier ones), and
* one summary per other block e: the mean of the keys of e that query i may see, carrying the mean of
  their values. A block of which the query may see no key has no summary.

With a key-padding mask (``(B, 1, 1, Tk)``) padded keys take no part in their block's summary nor in the
in-block attention; under ``causal`` the summaries are those of the blocks wholly before the query's.

This is the two-level case of hierarchical attention in the sense of H-Transformer-1D (Zhu & Soricut 2021,
"H-Transformer-1D: Fast One-Dimensional Hierarchical Attention for Sequences", section 5: exact attention
near the diagonal, coarsened keys and values further away), with the queries left fine and one
level of coarsening. For self-attention (``Tq == Tk``) with no mask or a key-padding mask the summaries are
shared by all queries and are computed once per block: ``block + T / block`` scores per query instead of
``T``. The reference is the definition itself: a dense masked softmax over the ``T`` keys followed by the
``C`` summaries (``tests/longctx/test_hierarchical.py``).

Weights over the ``Tk`` keys (``need_weights``): a summary's weight is spread uniformly over the keys it
averages, w_ij = w_i,e / |S_ie| for j in the set S_ie of block e's keys query i sees. Since the summary's
value is the mean of those keys' values, sum_j w_ij v_j equals the two-level output exactly; the weights of
a row sum to 1 (0 for a row that sees no key).

Other masks and cached decoding (``Tq != Tk``) take the dense path, which computes the same definition with
query-dependent summaries in O(Tq Tk): a query's position p_i is i when ``Tq == Tk``; otherwise its last
visible key (the convention of :mod:`attnkit.attention.adaptive_span`: a cache's mask marks the slot of the
new token), or ``Tk - Tq + i`` without a mask. Blocks are counted in the keys' frame, so a left-padded
prompt's blocks start at slot 0 rather than at its first token. A score bias (relative or ALiBi positions)
is refused: a summary has no single key position to bias.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.attention.base import AttentionKernel, masked_softmax, repeat_kv
from attnkit.attention.masks import combine
from attnkit.attention.registry import register


@register("hierarchical")
class HierarchicalAttention(AttentionKernel):
    """Attention inside blocks of ``block`` positions plus attention to the other blocks' mean keys and values.

    Args:
        block: positions per block.
        dropout: attention-weight dropout.
        scale: overrides 1/sqrt(d_k).
    """

    def __init__(self, block: int = 64, dropout: float = 0.0, scale: float | None = None) -> None:
        super().__init__(dropout)
        if block <= 0:
            raise ValueError(f"block={block!r} must be positive")
        if scale is not None and not scale > 0:
            raise ValueError(f"scale={scale!r} must be positive")
        self.block, self.scale = block, scale

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                causal: bool = False, need_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``q: (B, H, Tq, D)``, ``k: (B, H or G, Tk, D)``, ``v: (B, H or G, Tk, Dv)`` -> ``(B, H, Tq, Dv)``
        (and the ``(B, H, Tq, Tk)`` weights when ``need_weights``)."""
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be boolean (True = may attend), got {mask.dtype}")
        if bias is not None:
            raise ValueError("attention kind 'hierarchical' takes no score bias (a block summary has no single key position)")
        h, tq, tk = q.shape[1], q.shape[-2], k.shape[-2]
        k, v = repeat_kv(k, h), repeat_kv(v, h)  # (B, H, Tk, D)
        key_padding = mask is None or mask.dim() < 2 or mask.shape[-2] == 1
        if tq == tk and key_padding and not need_weights:
            return self._blocked(q, k, v, mask, causal)
        w = self.weights(q, k, mask=mask, causal=causal)  # (B, H, Tq, Tk)
        p = torch.nn.functional.dropout(w, self.dropout, self.training) if self.dropout else w
        out = torch.matmul(p.to(v.dtype), v)  # (B, H, Tq, Dv)
        return (out, w) if need_weights else out

    def _scale(self, d: int) -> float:
        return self.scale if self.scale is not None else d ** -0.5

    def _blocked(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
        """Self-attention with shared summaries: ``block`` exact scores and ``C`` summary scores per query."""
        b, h, t, d = q.shape
        dv = v.shape[-1]
        n = self.block
        c = -(-t // n)  # blocks
        pad = c * n - t
        valid = torch.ones(b, h, t, dtype=torch.bool, device=q.device) if mask is None else \
            torch.broadcast_to(mask, (b, h, 1, t))[:, :, 0]  # (B, H, T): keys that take part
        valid = torch.nn.functional.pad(valid, (0, pad), value=False).view(b, h, c, n)  # (B, H, C, n)
        qb, kb, vb = (torch.nn.functional.pad(x, (0, 0, 0, pad)).view(b, h, c, n, x.shape[-1]) for x in (q, k, v))  # (B, H, C, n, .)
        count = valid.sum(-1)  # (B, H, C): valid keys per block
        denom = count.clamp(min=1).to(kb.dtype)[..., None]  # (B, H, C, 1)
        vf = valid[..., None].to(kb.dtype)
        k_sum = (kb * vf).sum(-2) / denom  # (B, H, C, D): each block's mean valid key
        v_sum = (vb * vf).sum(-2) / denom  # (B, H, C, Dv)
        scale = self._scale(d)
        local = torch.einsum("bhcid,bhcjd->bhcij", qb, kb) * scale  # (B, H, C, n, n)
        coarse = torch.einsum("bhcid,bhed->bhcie", qb, k_sum) * scale  # (B, H, C, n, C)
        keep_local = valid[:, :, :, None, :]  # (B, H, C, 1, n)
        if causal:
            i = torch.arange(n, device=q.device)
            keep_local = keep_local & (i[:, None] >= i[None, :])  # (B, H, C, n, n)
        blocks = torch.arange(c, device=q.device)
        other = (blocks[None, :] < blocks[:, None]) if causal else (blocks[None, :] != blocks[:, None])  # (C, C)
        keep_coarse = other[None, None, :, None, :] & (count > 0)[:, :, None, None, :]  # (B, H, C, 1, C)
        keep = torch.cat([keep_local.expand(b, h, c, n, n), keep_coarse.expand(b, h, c, n, c)], dim=-1)
        w = masked_softmax(torch.cat([local, coarse], dim=-1), keep)  # (B, H, C, n, n + C): one softmax over both
        if self.dropout and self.training:
            w = torch.nn.functional.dropout(w, self.dropout)
        w = w.to(vb.dtype)
        out = torch.einsum("bhcij,bhcjd->bhcid", w[..., :n], vb) + torch.einsum("bhcie,bhed->bhcid", w[..., n:], v_sum)
        return out.reshape(b, h, c * n, dv)[:, :, :t]  # (B, H, T, Dv)

    def weights(self, q: Tensor, k: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                causal: bool = False) -> Tensor:
        """The weights ``(B, H, Tq, Tk)`` over the keys, each summary's weight spread over the keys it averages.

        Args:
            q: ``(B, H, Tq, D)`` queries.
            k: ``(B, H or G, Tk, D)`` keys.
            mask: boolean, broadcastable to ``(B, H, Tq, Tk)``, True = may attend.
            bias: must be None (refused).
            causal: the bottom-right aligned causal mask.

        Returns:
            Weights in the input dtype (float32 softmax for half precision); rows that see no key are zeros.
        """
        if bias is not None:
            raise ValueError("attention kind 'hierarchical' takes no score bias (a block summary has no single key position)")
        b, h, tq, d = q.shape
        k = repeat_kv(k, h)
        tk, n = k.shape[-2], self.block
        c = -(-tk // n)
        keys = torch.arange(tk, device=q.device)
        allowed = combine(mask, causal, tq, tk, q.device)
        allowed = torch.ones(tq, tk, dtype=torch.bool, device=q.device) if allowed is None else allowed
        allowed = torch.broadcast_to(allowed, (b, h, tq, tk))
        if tq == tk:
            pos = torch.arange(tq, device=q.device)  # (Tq,)
        elif mask is None:
            pos = tk - tq + torch.arange(tq, device=q.device)
        else:
            pos = torch.where(allowed, keys, -1).amax(-1)  # (B, H, Tq): the last visible key (-1: none)
        own = torch.div(pos, n, rounding_mode="floor")[..., None] == (keys // n)  # (..., Tq, Tk)
        local_ok = allowed & own  # (B, H, Tq, Tk)
        member = allowed & ~own  # keys entering a summary
        s = torch.einsum("bhid,bhjd->bhij", q, k) * self._scale(d)  # (B, H, Tq, Tk)
        s = s.float() if s.dtype in (torch.float16, torch.bfloat16) else s
        onehot = torch.nn.functional.one_hot(keys // n, c).to(s.dtype)  # (Tk, C)
        count = member.to(s.dtype) @ onehot  # (B, H, Tq, C): |S_ie|
        denom = count.clamp(min=1)
        coarse = (torch.where(member, s, torch.zeros_like(s)) @ onehot) / denom  # q_i . mean(k_j, j in S_ie)
        w = masked_softmax(torch.cat([s, coarse], -1), torch.cat([local_ok, count > 0], -1))  # (B, H, Tq, Tk + C)
        spread = (w[..., tk:] / denom)[..., keys // n]  # (B, H, Tq, Tk): each summary's weight per key it averages
        return (torch.where(local_ok, w[..., :tk], torch.zeros_like(s)) + torch.where(member, spread, torch.zeros_like(s))).to(q.dtype)

    def extra_repr(self) -> str:
        return f"block={self.block}, dropout={self.dropout}, scale={self.scale}"
