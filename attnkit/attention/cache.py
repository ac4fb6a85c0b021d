"""Caches for incremental decoding (in the style of gpt-fast's fixed buffers), behind one protocol.

:class:`~attnkit.attention.MultiHeadAttention` hands every cache the same call,
``cache.update(kernel, q, new_kv, mask=..., bias=..., causal=..., need_weights=...)``, and the
cache decides how this step's keys and values are kept and what the kernel sees:

* :class:`KVCache` (self-attention) appends the new keys/values to its buffers and lets the
  kernel attend to every cached position;
* :class:`StaticKV` (cross-attention) computes the encoder's keys/values once, on the first
  call, and reuses them at every later step without projecting the encoder output again;
* :class:`~attnkit.attention.linear.RecurrentCache` (causal linear attention) keeps a fixed-size
  state instead of past keys and advances it by the new positions.

``new_kv`` is a function returning this step's ``(k, v)``, so a cache that needs none of them
never computes them. ``reorder`` follows beam search's choice of hypotheses.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from torch import Tensor, nn

NewKV = Callable[[], tuple[Tensor, Tensor]]


class AttentionCache(Protocol):
    """What :class:`~attnkit.attention.MultiHeadAttention` asks of a cache."""

    @property
    def length(self) -> int:
        """Positions already seen (the position of the next new query)."""
        ...

    def update(self, kernel: nn.Module, q: Tensor, new_kv: NewKV, **kw: Any) -> Any:
        """Store this step's keys/values and return the kernel's result for queries ``q``.

        Args:
            kernel: the attention kernel of the layer.
            q: ``(B, H, Tq, D)`` queries of this step.
            new_kv: returns this step's ``(k, v)``, each ``(B, H, T, D)``.
            **kw: the kernel's keyword arguments (``mask``, ``bias``, ``causal``, ``need_weights``).

        Returns:
            What ``kernel(q, k, v, **kw)`` returns over the keys/values the cache exposes.
        """
        ...

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index``."""
        ...


class NoCache:
    """The cache of a call without one: this step's keys and values are all there is."""

    length = 0

    def update(self, kernel: nn.Module, q: Tensor, new_kv: NewKV, **kw: Any) -> Any:
        k, v = new_kv()
        return kernel(q, k, v, **kw)

    def reorder(self, index: Tensor) -> None:
        pass


NO_CACHE = NoCache()


class KVCache:
    """Fixed-capacity ``(B, H, T_max, D)`` key/value buffers filled front to back.

    Args:
        max_len: capacity in positions; buffers are allocated on the first ``append``
            with the dtype/device of the keys.
    """

    def __init__(self, max_len: int, stack: KVStack | None = None) -> None:
        if max_len <= 0:
            raise ValueError(f"max_len={max_len!r} must be positive")
        self.max_len = max_len
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0
        self.stack = stack  # set: k and v are views of the stack's buffer (see KVStack)

    def update(self, kernel: nn.Module, q: Tensor, new_kv: NewKV, **kw: Any) -> Any:
        """Append this step's keys/values (:meth:`append`); the kernel attends to every stored position."""
        k, v = self.append(*new_kv())
        return kernel(q, k, v, **kw)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k, v: (B, H, T, D)`` after the cached positions; return all of them."""
        b, h, t, d = k.shape
        if self.k is None:
            if self.stack is not None and k.shape == v.shape:
                self.stack.allocate(k)  # every layer's views at once
            else:
                self.stack = None
                self.k = k.new_zeros(b, h, self.max_len, d)
                self.v = v.new_zeros(b, h, self.max_len, v.shape[-1])
        assert self.v is not None
        end = self.length + t
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.max_len}; raise max_len")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search's surviving hypotheses).

        Only the ``length`` filled positions are copied, not the whole capacity; with as many
        rows as before (a beam step) the buffers are reused in place.
        """
        if self.k is None or self.v is None:
            return
        n = self.length
        if self.stack is not None:  # reordered on its own: leaves its stack, with buffers of its own
            self.k, self.v, self.stack = self.k.clone(), self.v.clone(), None
        if index.shape[0] == self.k.shape[0]:
            self.k[:, :, :n] = self.k[:, :, :n].index_select(0, index)
            self.v[:, :, :n] = self.v[:, :, :n].index_select(0, index)
            return
        k = self.k.new_zeros(index.shape[0], *self.k.shape[1:])
        v = self.v.new_zeros(index.shape[0], *self.v.shape[1:])
        k[:, :, :n] = self.k[:, :, :n].index_select(0, index)
        v[:, :, :n] = self.v[:, :, :n].index_select(0, index)
        self.k, self.v = k, v


class KVStack:
    """The self-attention caches of all decoder layers as views of one ``(L, 2, B, H, T_max, D)``
    buffer, so that beam search reorders every layer's keys and values with one gather and one
    copy per step instead of two of each per layer: at one new token per step these are host
    operations on every step.

    Args:
        n_layers: decoder layers (one :class:`KVCache` each, in :attr:`caches`).
        max_len: capacity in positions, as for :class:`KVCache`.
    """

    def __init__(self, n_layers: int, max_len: int) -> None:
        self.caches = [KVCache(max_len, stack=self) for _ in range(n_layers)]
        self.buf: Tensor | None = None

    def allocate(self, k: Tensor) -> None:
        """Allocate the buffer for keys like ``k: (B, H, T, D)`` and point every cache at it."""
        b, h, _, d = k.shape
        self.buf = k.new_zeros(len(self.caches), 2, b, h, self.caches[0].max_len, d)
        self._point()

    def _point(self) -> None:
        assert self.buf is not None
        for i, c in enumerate(self.caches):
            if c.stack is self:
                c.k, c.v = self.buf[i, 0], self.buf[i, 1]  # (B, H, T_max, D) views

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` in every layer: :meth:`KVCache.reorder` for all at once."""
        if self.buf is None:
            return
        n = max(c.length for c in self.caches)  # the filled positions (equal in every layer)
        kept = self.buf[..., :n, :].index_select(2, index)  # (L, 2, B', H, n, D)
        if index.shape[0] == self.buf.shape[2]:
            self.buf[..., :n, :] = kept  # a beam step: in place
            return
        self.buf = self.buf.new_zeros(self.buf.shape[0], 2, index.shape[0], *self.buf.shape[3:])
        self.buf[..., :n, :] = kept
        self._point()


class StaticKV:
    """Cross-attention keys/values: computed once from the encoder output, then reused."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def filled(self) -> bool:
        return self.k is not None

    @property
    def length(self) -> int:
        return 0 if self.k is None else self.k.shape[-2]

    def update(self, kernel: nn.Module, q: Tensor, new_kv: NewKV, **kw: Any) -> Any:
        """On the first call, compute and keep the keys/values; afterwards reuse them (``new_kv`` is not called)."""
        if self.k is None:
            self.set(*new_kv())
        return kernel(q, self.k, self.v, **kw)

    def set(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k, self.v = k, v
        return k, v

    def reorder(self, index: Tensor) -> None:
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)  # type: ignore[union-attr]


class LayerCache:
    """The caches of one decoder layer: growing self-attention, static cross-attention."""

    def __init__(self, max_len: int, cross: bool = True, self_attn: KVCache | None = None) -> None:
        self.self_attn = KVCache(max_len) if self_attn is None else self_attn
        self.cross_attn = StaticKV() if cross else None

    def reorder(self, index: Tensor, *, cross: bool = True) -> None:
        """Keep rows ``index``; ``cross=False`` leaves the cross-attention keys alone (beam search
        reordering hypotheses within an example, whose encoder rows are identical)."""
        self.self_attn.reorder(index)
        if self.cross_attn is not None and cross:
            self.cross_attn.reorder(index)


def make_caches(n_layers: int, max_len: int, cross: bool = True) -> list[LayerCache]:
    """One :class:`LayerCache` per decoder layer, their self-attention caches in one :class:`KVStack`."""
    if n_layers == 0:
        return []
    stack = KVStack(n_layers, max_len)
    return [LayerCache(max_len, cross, self_attn=kv) for kv in stack.caches]


def reorder_caches(caches: list[LayerCache], index: Tensor, *, cross: bool = True) -> None:
    """Reorder every layer's caches (see :meth:`LayerCache.reorder`); self-attention caches
    that are all of one :class:`KVStack` are reordered with it, at once."""
    stack = getattr(getattr(caches[0], "self_attn", None), "stack", None) if caches else None
    if stack is None or [c.self_attn for c in caches] != stack.caches or any(kv.stack is not stack for kv in stack.caches):
        for c in caches:
            c.reorder(index, cross=cross)
        return
    stack.reorder(index)
    for c in caches:
        if cross and c.cross_attn is not None:
            c.cross_attn.reorder(index)


__all__ = ["AttentionCache", "NO_CACHE", "NoCache", "KVCache", "KVStack", "StaticKV", "LayerCache", "make_caches", "reorder_caches"]
