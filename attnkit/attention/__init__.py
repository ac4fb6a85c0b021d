"""Attention: kernels behind one registry, multi-head attention, masks and KV caches.

>>> import attnkit.attention as A
>>> "scaled_dot" in A.names() and "sliding_window" in A.names()
True
>>> kernel = A.get("scaled_dot")
"""

from attnkit.attention.registry import build, get, names, register
from attnkit.attention.base import AttentionKernel, masked_softmax
from attnkit.attention import additive, relu, scaled_dot  # noqa: F401  (register the built-in kernels)
from attnkit.attention import linear, linformer, lsh, performer, routing, sparse  # noqa: F401  (the long-sequence kernels)
from attnkit.attention import adaptive_span  # noqa: F401  (learned soft span per head)
from attnkit.attention import hierarchical  # noqa: F401  (exact in blocks, block summaries across them)
from attnkit.attention.cache import KVCache, LayerCache, StaticKV, make_caches, reorder_caches
from attnkit.attention.masks import causal_mask, padding_mask
from attnkit.attention.multihead import MultiHeadAttention

__all__ = [
    "AttentionKernel",
    "KVCache",
    "LayerCache",
    "MultiHeadAttention",
    "StaticKV",
    "build",
    "causal_mask",
    "get",
    "make_caches",
    "masked_softmax",
    "names",
    "padding_mask",
    "register",
    "reorder_caches",
]
