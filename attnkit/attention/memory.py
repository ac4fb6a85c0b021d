"""Transformer-XL's segment-level recurrence (Dai et al. 2019, section 3.2), as a cache of one layer.

For layer n and segment tau + 1 (eq. in section 3.2):

    h~^{n-1}_{tau+1} = [SG(m^{n-1}_tau) ; h^{n-1}_{tau+1}]
    q^n = h^{n-1}_{tau+1} W_q,   k^n = h~^{n-1}_{tau+1} W_k,   v^n = h~^{n-1}_{tau+1} W_v

The memory ``m`` holds the layer's inputs at the last ``mem_len`` positions before the segment,
with the gradient stopped (SG). Keys and values are projected from ``[memory; segment]`` with the
current weights, so W_k and W_v also learn from the memory positions; the queries are the
segment's only. The queries sit at positions ``M .. M + T - 1`` of the keys' frame (``length`` is
``M``), so the relative attention of :mod:`attnkit.positions` (``xl_relative`` in the paper) sees
the true distances, and the causal mask (bottom-right aligned) lets each query see the whole
memory and the segment up to itself. After the call the memory becomes the last ``mem_len``
positions of ``[memory; segment]``, detached (section 3.2: "the hidden state sequence computed for
the previous segment is fixed and cached").

Deviation: the stored input is the one the attention projects, after the pre-norm LayerNorm of
a GPT layer, so the LayerNorm of the memory positions is the one of the step that stored them;
the paper stores the layer's input and normalises it again (the same values at fixed weights).

:class:`~attnkit.attention.MultiHeadAttention` asks a cache with ``extend`` for the inputs its
keys and values are projected from; otherwise this is the ordinary cache protocol
(:mod:`attnkit.attention.cache`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnkit.attention.cache import NewKV


class XLMemory:
    """The memory of one self-attention layer: its last ``mem_len`` inputs ``(B, M, d_model)``.

    Args:
        mem_len: positions kept after each call (0: none; the layer then sees its segment only).
    """

    def __init__(self, mem_len: int) -> None:
        if mem_len < 0:
            raise ValueError(f"mem_len={mem_len!r} must be >= 0")
        self.mem_len = mem_len
        self.memory: Tensor | None = None  # (B, M, d_model), M <= mem_len, no gradient
        self._next: Tensor | None = None

    @property
    def length(self) -> int:
        """Memory positions before the segment (the position of its first query)."""
        return 0 if self.memory is None else int(self.memory.shape[1])

    def extend(self, x: Tensor) -> Tensor:
        """``[SG(m); x]``: the inputs keys and values are projected from, ``(B, M + T, d_model)``.

        Args:
            x: ``(B, T, d_model)`` the segment's inputs to the attention.
        """
        if self.memory is not None and (self.memory.shape[0] != x.shape[0] or self.memory.shape[2] != x.shape[2]):
            raise ValueError(f"memory of shape {tuple(self.memory.shape)} does not continue inputs of shape {tuple(x.shape)}; "
                             "reset the memory when the batch changes")
        full = x if self.memory is None else torch.cat((self.memory.to(x.dtype), x), dim=1)  # (B, M + T, d_model)
        keep = full[:, max(0, full.shape[1] - self.mem_len) :] if self.mem_len else None  # the last mem_len, or all
        self._next = None if keep is None else keep.detach()  # SG: no gradient into an earlier segment
        return full

    def update(self, kernel: nn.Module, q: Tensor, new_kv: NewKV, **kw: Any) -> Any:
        """The kernel over the memory's and the segment's keys, then the memory moves on.

        Args:
            kernel: the layer's kernel (with a positional bias, the hook's wrapper).
            q: ``(B, H, T, D)`` the segment's queries.
            new_kv: returns the keys and values of ``[memory; segment]``, ``(B, G, M + T, D)`` each.
            **kw: the kernel's keyword arguments (``mask`` over ``M + T`` keys, ``causal``, ...).
        """
        k, v = new_kv()
        out = kernel(q, k, v, **kw)
        self.memory, self._next = self._next, None
        return out

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index``."""
        if self.memory is not None:
            self.memory = self.memory.index_select(0, index)

    def reset(self) -> None:
        """Forget the memory (a new stream starts)."""
        self.memory = self._next = None


def new_memories(n_layers: int, mem_len: int) -> list[XLMemory]:
    """Empty memories, one per layer.

    Args:
        n_layers: layers of the model.
        mem_len: positions each keeps.
    """
    return [XLMemory(mem_len) for _ in range(n_layers)]
