"""Boolean attention masks. Convention everywhere in attnkit: True = may attend.

Masks broadcast to ``(B, H, Tq, Tk)``. Causal masks are aligned to the *bottom right*:
with ``Tq`` new queries over ``Tk`` keys (``Tk >= Tq`` when a KV cache holds the past),
query ``i`` sits at absolute position ``Tk - Tq + i`` and sees keys ``j <= Tk - Tq + i``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(tq: int, tk: int, device: torch.device | None = None) -> Tensor:
    """``(Tq, Tk)`` lower-triangular mask, bottom-right aligned (decoder self-attention, paper section 3.2.3)."""
    q_pos = torch.arange(tq, device=device).unsqueeze(1) + (tk - tq)  # (Tq, 1)
    k_pos = torch.arange(tk, device=device).unsqueeze(0)  # (1, Tk)
    return k_pos <= q_pos


def padding_mask(lengths_or_ids: Tensor, pad_id: int | None = None, max_len: int | None = None) -> Tensor:
    """Key-padding mask of shape ``(B, 1, 1, T)``.

    Args:
        lengths_or_ids: either token ids ``(B, T)`` (with ``pad_id``) or lengths ``(B,)``.
        pad_id: the padding id when ids are given.
        max_len: T when lengths are given (default: the largest length).
    """
    if pad_id is not None:
        keep = lengths_or_ids != pad_id  # (B, T)
    else:
        t = int(max_len if max_len is not None else lengths_or_ids.max())
        keep = torch.arange(t, device=lengths_or_ids.device).unsqueeze(0) < lengths_or_ids.unsqueeze(1)
    return keep[:, None, None, :]  # (B, 1, 1, T)


def additive_bias(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask (True = may attend) as an additive score bias: 0 where allowed, -inf elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, float("-inf"))


def padding_bias(keep: Tensor, dtype: torch.dtype) -> Tensor:
    """A key-padding mask ``keep: (B, 1, 1, Tk)`` (True = real key) as an additive score bias:
    0 for real keys, -inf for padding, built once and shared by every layer that attends to
    those keys (a kernel given a mask rebuilds this per call, with an empty-row guard).

    A row whose keys are all padding gets 0 everywhere instead (it attends evenly to its
    padding, never NaN); with the boolean mask its output would be zeros.
    """
    return additive_bias(keep | ~keep.any(dim=-1, keepdim=True), dtype)  # (B, 1, 1, Tk)


def combine(mask: Tensor | None, causal: bool, tq: int, tk: int, device: torch.device) -> Tensor | None:
    """AND a user mask with the causal mask; ``None`` means everything may attend."""
    if not causal:
        return mask
    c = causal_mask(tq, tk, device)
    return c if mask is None else (mask & c)
