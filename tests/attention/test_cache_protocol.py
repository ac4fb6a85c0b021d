"""One cache protocol: MultiHeadAttention hands any cache ``update(kernel, q, new_kv, ...)``, no type checks."""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from torch import Tensor

from attnkit.attention import MultiHeadAttention, StaticKV
from attnkit.attention.cache import NO_CACHE, KVCache


class ConcatCache:
    """A cache written only against the protocol (no attnkit base class): it keeps keys and
    values by concatenation, and counts how often it was asked."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.calls = 0

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def update(self, kernel, q, new_kv, **kw):
        self.calls += 1
        k, v = new_kv()
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return kernel(q, self.k, self.v, **kw)

    def reorder(self, index: Tensor) -> None:
        self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


def test_a_protocol_only_cache_decodes_as_the_full_sequence() -> None:
    """Token-by-token through a foreign cache equals one causal pass over the whole sequence."""
    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 5, 16)
    full, _ = attn(x, causal=True)
    cache = ConcatCache()
    steps = [attn(x[:, :2], causal=True, cache=cache)[0]] + [attn(x[:, t : t + 1], causal=True, cache=cache)[0] for t in range(2, 5)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full)
    assert cache.calls == 4 and cache.length == 5


def test_kv_cache_matches_the_naive_attention_of_every_prefix() -> None:
    """KVCache.update against softmax(q k^T / sqrt(d)) v computed by hand over the stored keys."""
    torch.manual_seed(1)
    attn = MultiHeadAttention(8, 2).eval()
    cache = KVCache(max_len=4)
    x = torch.randn(1, 4, 8)
    outs = [attn(x[:, t : t + 1], causal=True, cache=cache)[0] for t in range(4)]
    q, k, v = attn.qkv_proj(x).view(1, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
    w = (q @ k.transpose(-2, -1) / 2.0).masked_fill(torch.ones(4, 4, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    ref = attn.out_proj((w @ v).transpose(1, 2).reshape(1, 4, 8))
    torch.testing.assert_close(torch.cat(outs, dim=1), ref)


def test_static_kv_projects_the_encoder_output_once() -> None:
    torch.manual_seed(2)
    attn = MultiHeadAttention(8, 2, cross=True).eval()
    memory, cache = torch.randn(2, 6, 8), StaticKV()
    first, _ = attn(torch.randn(2, 1, 8), memory, cache=cache)
    calls = []
    attn.kv_proj.register_forward_hook(lambda *a: calls.append(1))
    y = torch.randn(2, 1, 8)
    again, _ = attn(y, None, cache=cache)  # no context needed: the cache holds the keys
    assert calls == [] and cache.length == 6
    torch.testing.assert_close(again, attn(y, memory)[0])


def test_no_cache_is_the_plain_call() -> None:
    torch.manual_seed(3)
    kernel = MultiHeadAttention(8, 2).kernel
    q, k, v = torch.randn(3, 1, 2, 5, 4).unbind(0)
    torch.testing.assert_close(NO_CACHE.update(kernel, q, lambda: (k, v), causal=True), kernel(q, k, v, causal=True))


def test_multihead_attention_has_no_type_checks() -> None:
    """MultiHeadAttention treats every kernel and cache alike: no isinstance and no kernel or cache class named."""
    path = Path(__file__).resolve().parents[2] / "attnkit" / "attention" / "multihead.py"
    tree = ast.parse(path.read_text())
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert "isinstance" not in calls and "type" not in calls
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not imported & {"KVCache", "StaticKV", "RecurrentCache", "LinearAttention"}
