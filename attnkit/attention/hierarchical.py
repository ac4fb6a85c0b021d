"""Two-level hierarchical attention: exact inside a block, coarse across blocks.

The sequence is cut into blocks of ``block`` positions. A query attends, in one softmax, to

* every key of its own block (the earlier ones only, under ``causal``), and
* one summary per other block: the mean of that block's keys, carrying the mean of its values
  (under ``causal`` only the blocks wholly before the query's).

This is the two-level case of hierarchical attention in the sense of H-Transformer-1D (Zhu &
Soricut 2021, section 5: exact attention near the diagonal, coarsened keys and values further
away), with the queries left fine and one level of coarsening. Cost per query: ``block + T / block``
scores instead of ``T``. The reference is the definition itself: a dense masked softmax over the
``T`` keys followed by the ``C`` summaries (``tests/longctx/test_hierarchical.py``).

Self-attention over a whole sequence only (``Tq == Tk``, no cache); a mask or score bias is
refused (a padded key would enter its block's summary). A last partial block is summarised over
the keys it has. It is not in the kernel registry: the registry's kernels take key-padding masks
and report their weights over the ``Tk`` keys, which this kernel does not yet.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.attention.base import AttentionKernel, repeat_kv


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
                causal: bool = False, need_weights: bool = False) -> Tensor:
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be boolean (True = may attend), got {mask.dtype}")
        if mask is not None or bias is not None or need_weights:
            raise ValueError("hierarchical attention takes no mask, score bias or need_weights (block summaries are means "
                             "over every key of a block)")
        b, h, t, d = q.shape
        if k.shape[-2] != t:
            raise ValueError(f"hierarchical attention is self-attention over one sequence: {t} queries but {k.shape[-2]} keys")
        k, v = repeat_kv(k, h), repeat_kv(v, h)  # (B, H, T, D)
        dv = v.shape[-1]
        n = self.block
        c = -(-t // n)  # blocks
        pad = c * n - t
        real = torch.arange(c * n, device=q.device) < t  # (C n,)
        qb, kb, vb = (torch.nn.functional.pad(x, (0, 0, 0, pad)).view(b, h, c, n, x.shape[-1]) for x in (q, k, v))  # (B, H, C, n, .)
        count = real.view(c, n).sum(-1).to(q.dtype)  # (C,) real keys per block
        k_sum = kb.sum(-2) / count[:, None]  # (B, H, C, D): each block's mean key
        v_sum = vb.sum(-2) / count[:, None]  # (B, H, C, Dv)
        scale = self.scale if self.scale is not None else d ** -0.5
        local = torch.einsum("bhcid,bhcjd->bhcij", qb, kb) * scale  # (B, H, C, n, n)
        coarse = torch.einsum("bhcid,bhed->bhcie", qb, k_sum) * scale  # (B, H, C, n, C)
        i = torch.arange(n, device=q.device)
        keep_local = real.view(c, n)[:, None, :].expand(c, n, n)  # (C, n, n): real keys of the block
        if causal:
            keep_local = keep_local & (i[None, :, None] >= i[None, None, :])
        blocks = torch.arange(c, device=q.device)
        keep_coarse = (blocks[None, :] < blocks[:, None]) if causal else (blocks[None, :] != blocks[:, None])  # (C, C): other blocks
        local = local.masked_fill(~keep_local, float("-inf"))
        coarse = coarse.masked_fill(~keep_coarse[:, None, :], float("-inf"))
        w = torch.cat([local, coarse], dim=-1).softmax(-1)  # (B, H, C, n, n + C): one softmax over both
        w = torch.nan_to_num(w)  # padded query rows of the last block (dropped below)
        if self.dropout and self.training:
            w = torch.nn.functional.dropout(w, self.dropout)
        out = torch.einsum("bhcij,bhcjd->bhcid", w[..., :n], vb.to(w.dtype)) + torch.einsum("bhcie,bhed->bhcid", w[..., n:], v_sum)
        return out.reshape(b, h, c * n, dv)[:, :, :t]  # (B, H, T, Dv)

    def extra_repr(self) -> str:
        return f"block={self.block}, dropout={self.dropout}, scale={self.scale}"
