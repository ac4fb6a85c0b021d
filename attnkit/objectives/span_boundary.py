"""SpanBERT's span boundary objective, SBO (Joshi et al. 2020, section 3.2).

Every token ``x_i`` of a masked span ``(x_s, ..., x_e)`` is predicted a second time, from the encoder's
outputs at the span's two *boundary* tokens, just outside it, and the position of ``x_i`` in the span:

    h_0 = [x_{s-1}; x_{e+1}; p_{i-s+1}]
    h_1 = LayerNorm(GeLU(W_1 h_0))
    y_i = LayerNorm(GeLU(W_2 h_1))

(eq. 1-2), ``p`` a learned relative-position embedding; ``y_i`` goes through the masked-LM output layer
(tied to the token embeddings; the head is
:class:`~attnkit.models.bert_pretraining.SpanBoundaryHead`) and the loss is the cross-entropy against ``x_i``, added to the masked-LM
loss of the same token: ``L(x_i) = L_MLM(x_i) + L_SBO(x_i)``. Spans are those of SpanBERT's masking
(:mod:`attnkit.objectives.span_masking`): ``x_{s-1}`` and ``x_{e+1}`` are never masked themselves
([CLS] and [SEP] at the ends of a row), since spans never share a word.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.objectives.mlm import IGNORE

MAX_OFFSET = 64  # relative positions p_1 .. p_64 within a span (tokens); a longer span shares the last one


def span_boundaries(span_index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each span token's boundary positions and its 0-based place in the span.

    Args:
        span_index: ``(B, T)`` the span each token belongs to (any numbering per row), -1 outside spans.

    Returns:
        ``(left, right, offset)``, each ``(B, T)`` long: ``s - 1``, ``e + 1`` and ``i - s`` for the tokens of a span
        ``s .. e``; 0 elsewhere.
    """
    b, t = span_index.shape
    inside = span_index >= 0
    pos = torch.arange(t, device=span_index.device).expand(b, t)
    key = torch.where(inside, span_index, 0)  # (B, T)
    n = int(span_index.max()) + 1 if inside.any() else 1
    first = torch.full((b, n), t, device=span_index.device).scatter_reduce(1, key, torch.where(inside, pos, t), "amin")
    last = torch.full((b, n), -1, device=span_index.device).scatter_reduce(1, key, torch.where(inside, pos, -1), "amax")
    s, e = first.gather(1, key), last.gather(1, key)  # (B, T)
    zero = torch.zeros_like(pos)
    return torch.where(inside, s - 1, zero), torch.where(inside, e + 1, zero), torch.where(inside, pos - s, zero)


def span_boundary_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of ``logits: (B, P, V)`` against ``targets: (B, P)`` over the span tokens (``IGNORE`` elsewhere); 0 when none."""
    n = (targets != IGNORE).sum()
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return total / n.clamp(min=1)


__all__ = ["MAX_OFFSET", "span_boundaries", "span_boundary_loss"]
