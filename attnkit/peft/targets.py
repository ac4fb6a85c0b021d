"""Which linear layers an adapter goes on: module names matched by patterns, fused projections by slice.

Every ``nn.Linear`` of a model is a candidate under its module name (``bert.layers.0.ffn.w1``).
attnkit's self-attention keeps Q, K and V in one fused ``qkv_proj`` (``(n_heads + 2 n_kv_heads)
* head_dim`` rows: the query heads, then the key heads, then the value heads) and cross-attention
fuses K and V in ``kv_proj``; each slice is a candidate of its own under a virtual name beside
the fused one: ``...self_attn.q_proj``, ``...self_attn.k_proj``, ``...self_attn.v_proj``
(cross-attention's ``q_proj`` is a real layer, its ``k_proj``/``v_proj`` slices of ``kv_proj``).

A pattern matches a name when it equals it, equals its last components (``"w1"``, ``"ffn.w1"``,
``"v_proj"``), or matches it as a shell glob (``"*.layers.1*.self_attn.q_proj"``). ``q``, ``k``,
``v`` and ``o`` are short for ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj``; ``qkv`` for
``qkv_proj``. Each pattern must match at least one candidate; a fused layer is adapted either
whole or by slices, not both.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from torch import nn

from attnkit.errors import ConfigError

ALIASES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "out_proj", "qkv": "qkv_proj"}


@dataclass(frozen=True)
class Target:
    """A candidate: rows ``[start, stop)`` of the linear layer ``linear`` (all rows unless a slice)."""

    name: str  # the name patterns match (virtual for a slice)
    linear: str  # the module name of the nn.Linear
    part: str  # "all", or the slice: "q", "k", "v"
    start: int
    stop: int


def _fused_slices(attn: nn.Module) -> list[tuple[str, str, int, int]]:
    """``(slice, fused layer, start, stop)`` of one attention module's fused projections."""
    n_heads, head_dim = attn.n_heads, attn.head_dim
    n_kv = getattr(attn, "n_kv_heads", n_heads)  # grouped-query attention: fewer key/value heads
    q, kv = n_heads * head_dim, n_kv * head_dim
    if hasattr(attn, "qkv_proj"):
        return [("q", "qkv_proj", 0, q), ("k", "qkv_proj", q, q + kv), ("v", "qkv_proj", q + kv, q + 2 * kv)]
    if hasattr(attn, "kv_proj"):
        return [("k", "kv_proj", 0, kv), ("v", "kv_proj", kv, 2 * kv)]
    return []


def candidates(model: nn.Module) -> dict[str, Target]:
    """Every adaptable layer and fused slice of ``model`` by the name patterns match."""
    from attnkit.attention.multihead import MultiHeadAttention
    from attnkit.peft.nf4 import NF4Linear

    out: dict[str, Target] = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, NF4Linear)):
            out[name] = Target(name, name, "all", 0, m.out_features)
        if isinstance(m, MultiHeadAttention):
            for part, fused, start, stop in _fused_slices(m):
                virtual = f"{name}.{part}_proj" if name else f"{part}_proj"
                out[virtual] = Target(virtual, f"{name}.{fused}" if name else fused, part, start, stop)
    return out


def matches(pattern: str, name: str) -> bool:
    """Whether ``pattern`` names ``name`` (see the module's rules)."""
    p = ALIASES.get(pattern, pattern)
    return name == p or name.endswith("." + p) or fnmatch.fnmatchcase(name, p)


def select(model: nn.Module, patterns: tuple[str, ...] | list[str], exclude: tuple[str, ...] = ()) -> list[Target]:
    """The candidates the patterns name, in model order.

    Args:
        model: the built model.
        patterns: name patterns; each must match something.
        exclude: module names never to adapt (a task head trained in full).

    Raises:
        ConfigError: a pattern matches nothing (the message lists the names that exist), or a
            fused layer is chosen both whole and by slices.
    """
    if not patterns:
        raise ConfigError("peft targets are empty; name at least one layer (e.g. targets=['q', 'v'])")
    cands = {n: t for n, t in candidates(model).items() if not any(t.linear == e or t.linear.startswith(e + ".") for e in exclude)}
    chosen: dict[str, Target] = {}
    for p in patterns:
        hit = [t for n, t in cands.items() if matches(p, n)]
        if not hit:
            short = sorted({n.split(".")[-1] for n in cands})
            raise ConfigError(f"peft target {p!r} matches no layer; layer names end in: {', '.join(short)} "
                              f"(full names like {next(iter(cands), '?')!r})")
        for t in hit:
            chosen[t.name] = t
    by_linear: dict[str, set[str]] = {}
    for t in chosen.values():
        by_linear.setdefault(t.linear, set()).add(t.part)
    for linear, parts in by_linear.items():
        if "all" in parts and len(parts) > 1:
            raise ConfigError(f"peft targets choose {linear} both whole and by slices ({', '.join(sorted(parts - {'all'}))}); choose one")
    return list(chosen.values())


__all__ = ["ALIASES", "Target", "candidates", "matches", "select"]
