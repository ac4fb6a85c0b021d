"""Scaled dot-product attention and its unscaled variant.

Vaswani et al. 2017, section 3.2.1, eq. (1):
    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V
``dot`` drops the 1/sqrt(d_k) factor (Luong et al. 2015's "dot" score), which the
paper notes grows with d_k and pushes the softmax into regions of small gradient.

Fast path: ``torch.nn.functional.scaled_dot_product_attention`` (FlashAttention /
memory-efficient kernels on GPU, fused math on CPU). ``backend`` pins SDPA's GPU kernel, e.g.
the memory-efficient kernel for short sequences (16-30 tokens, the Multi30k recipe's), where it
can beat the cuDNN kernel SDPA picks by default and FlashAttention for causal self-attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnkit.attention.base import AttentionKernel, repeat_kv
from attnkit.attention.masks import additive_bias, combine
from attnkit.attention.registry import register


BACKENDS = {
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


@register("scaled_dot")
class ScaledDotProduct(AttentionKernel):
    """softmax(QK^T / sqrt(d_k)) V, eq. (1); ``scale`` overrides 1/sqrt(d_k).

    ``backend``: SDPA's kernel on CUDA (``efficient``, ``flash``, ``cudnn``, ``math``); ``None``
    lets SDPA choose. CPU calls always let SDPA choose.
    """

    bias_as_mask = True  # SDPA takes the additive bias as its float mask
    grouped_kv = True  # SDPA's enable_gqa reads each key/value head for its group of query heads

    def __init__(self, dropout: float = 0.0, scale: float | None = None, backend: str | None = None) -> None:
        super().__init__(dropout)
        if scale is not None and not scale > 0:
            raise ValueError(f"scale={scale!r} must be positive")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)} (or None: SDPA chooses)")
        self.scale, self.backend = scale, backend

    def _sdpa(self, q: Tensor, k: Tensor, v: Tensor, **kw) -> Tensor:
        if self.backend is None or not q.is_cuda:
            return F.scaled_dot_product_attention(q, k, v, **kw)
        with sdpa_kernel([BACKENDS[self.backend]]):
            return F.scaled_dot_product_attention(q, k, v, **kw)

    def _scale(self, d: int) -> float:
        return self.scale if self.scale is not None else 1.0 / math.sqrt(d)

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return torch.matmul(q, k.transpose(-2, -1)) * self._scale(q.shape[-1])  # (B, H, Tq, Tk)

    def fast(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None, causal: bool
    ) -> Tensor | None:
        tq, tk = q.shape[-2], k.shape[-2]
        p = self.dropout if self.training else 0.0
        scale = self._scale(q.shape[-1])
        if causal and tq == 1:
            causal = False  # one new query (cached decoding) sees every key: bottom-right causal is no mask
        if mask is None and bias is None:
            # SDPA's is_causal is top-left aligned; ours is bottom-right, equal only when Tq == Tk.
            if not causal or tq == tk:
                gqa = k.shape[-3] != q.shape[-3]  # FlashAttention reads the shared heads in place
                if gqa and self.backend in ("efficient", "cudnn"):  # pinned kernels without grouped heads
                    k, v = repeat_kv(k, q.shape[-3]), repeat_kv(v, q.shape[-3])
                    gqa = False
                return self._sdpa(q, k, v, dropout_p=p, is_causal=causal, scale=scale, **({"enable_gqa": True} if gqa else {}))
        h = q.shape[-3]
        k, v = repeat_kv(k, h), repeat_kv(v, h)  # with a float mask SDPA's grouped path falls back to the math kernel
        allowed = combine(mask, causal, tq, tk, q.device)
        empty = None
        if allowed is not None:
            # Rows with no allowed key would be NaN in SDPA: let them attend anywhere, zero them after.
            empty = ~allowed.any(dim=-1, keepdim=True)  # (..., Tq, 1)
            allowed = allowed | empty
        # SDPA gets an additive float mask (0 / -inf), the same function as the boolean one and
        # the form its fused kernels consume directly (a boolean mask is converted inside SDPA).
        attn_mask: Tensor | None = None
        if bias is not None:
            b = bias if bias.dtype == q.dtype else bias.to(q.dtype)  # shared biases come in q's dtype
            attn_mask = b if allowed is None else b.masked_fill(~allowed, float("-inf"))
        elif allowed is not None:
            attn_mask = additive_bias(allowed, q.dtype)
        out = self._sdpa(q, k, v, attn_mask=attn_mask, dropout_p=p, scale=scale)
        if empty is not None:
            out = out.masked_fill(empty, 0.0)
        return out

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, scale={self.scale}" + (f", backend={self.backend}" if self.backend else "")


@register("dot")
class DotProduct(ScaledDotProduct):
    """softmax(QK^T) V: dot-product attention without the 1/sqrt(d_k) scale (section 3.2.1)."""

    def __init__(self, dropout: float = 0.0, backend: str | None = None) -> None:
        super().__init__(dropout, scale=1.0, backend=backend)
