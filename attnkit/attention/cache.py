"""Key/value caches for incremental decoding (in the style of gpt-fast's fixed buffers).

A self-attention cache grows by the new step's keys and values; a cross-attention cache
is filled once from the encoder output and reused at every step. ``reorder`` follows
beam search's choice of hypotheses.
"""

from __future__ import annotations

from torch import Tensor


class KVCache:
    """Fixed-capacity ``(B, H, T_max, D)`` key/value buffers filled front to back.

    Args:
        max_len: capacity in positions; buffers are allocated on the first ``append``
            with the dtype/device of the keys.
    """

    def __init__(self, max_len: int) -> None:
        if max_len <= 0:
            raise ValueError(f"max_len={max_len!r} must be positive")
        self.max_len = max_len
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store ``k, v: (B, H, T, D)`` after the cached positions; return all of them."""
        b, h, t, d = k.shape
        if self.k is None:
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
        if index.shape[0] == self.k.shape[0]:
            self.k[:, :, :n] = self.k[:, :, :n].index_select(0, index)
            self.v[:, :, :n] = self.v[:, :, :n].index_select(0, index)
            return
        k = self.k.new_zeros(index.shape[0], *self.k.shape[1:])
        v = self.v.new_zeros(index.shape[0], *self.v.shape[1:])
        k[:, :, :n] = self.k[:, :, :n].index_select(0, index)
        v[:, :, :n] = self.v[:, :, :n].index_select(0, index)
        self.k, self.v = k, v


class StaticKV:
    """Cross-attention keys/values: computed once from the encoder output, then reused."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    @property
    def filled(self) -> bool:
        return self.k is not None

    def set(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.k, self.v = k, v
        return k, v

    def reorder(self, index: Tensor) -> None:
        if self.k is not None:
            self.k = self.k.index_select(0, index)
            self.v = self.v.index_select(0, index)  # type: ignore[union-attr]


class LayerCache:
    """The caches of one decoder layer: growing self-attention, static cross-attention."""

    def __init__(self, max_len: int, cross: bool = True) -> None:
        self.self_attn = KVCache(max_len)
        self.cross_attn = StaticKV() if cross else None

    def reorder(self, index: Tensor, *, cross: bool = True) -> None:
        """Keep rows ``index``; ``cross=False`` leaves the cross-attention keys alone (beam search
        reordering hypotheses within an example, whose encoder rows are identical)."""
        self.self_attn.reorder(index)
        if self.cross_attn is not None and cross:
            self.cross_attn.reorder(index)


def make_caches(n_layers: int, max_len: int, cross: bool = True) -> list[LayerCache]:
    """One :class:`LayerCache` per decoder layer."""
    return [LayerCache(max_len, cross) for _ in range(n_layers)]


def reorder_caches(caches: list[LayerCache], index: Tensor, *, cross: bool = True) -> None:
    """Reorder every layer's caches (see :meth:`LayerCache.reorder`)."""
    for c in caches:
        c.reorder(index, cross=cross)


__all__ = ["KVCache", "StaticKV", "LayerCache", "make_caches", "reorder_caches"]
