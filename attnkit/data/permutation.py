"""XLNet's permutation-LM inputs with partial prediction (Yang et al. 2019, section 2.2-2.3).

For each row, a factorisation order ``z`` of its real tokens is drawn uniformly; the last ``1/K`` of
the order are the targets (``K = 6``, section 3.1: "partial prediction with K = 6"), the rest the
context. As in XLNet's data pipeline, the context tokens see one another freely and only the targets
are hidden by the order: token ``i`` may see token ``j`` unless ``j`` is a target that does not come
before ``i`` in ``z`` (``perm_mask[i, j] = 1``). So a target's query stream sees the context and the
targets before it, never itself; its content stream also sees itself. Padding is never a target and
is hidden by the attention mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.objectives.mlm import IGNORE


def permutation_inputs(ids: Tensor, attention_mask: Tensor, *, k: float = 6.0, maskable: Tensor | None = None,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``perm_mask``, ``target_mapping`` and the labels of one batch.

    Args:
        ids: ``(B, T)`` tokens.
        attention_mask: ``(B, T)`` 1 for real tokens.
        k: predict ``max(1, round(n / k))`` of a row's ``n`` candidate tokens.
        maskable: ``(B, T)`` the tokens that may be targets (default: the real ones).
        generator: the random source.

    Returns:
        ``(perm_mask (B, T, T) float, target_mapping (B, P, T) float, labels (B, P) long)``; rows with fewer than
        ``P`` targets pad their mapping with zeros and their labels with ``IGNORE``.
    """
    B, T = ids.shape
    candidates = (maskable if maskable is not None else attention_mask).bool().cpu()
    real = attention_mask.bool().cpu()
    chosen: list[list[int]] = []
    perm_mask = torch.zeros(B, T, T)
    for b in range(B):
        pos = candidates[b].nonzero().squeeze(1)
        order = pos[torch.randperm(len(pos), generator=generator)] if len(pos) else pos
        n_predict = max(1, round(len(pos) / k)) if len(pos) else 0
        targets = order[len(order) - n_predict :]
        rank = torch.full((T,), -1, dtype=torch.long)  # context and padding: -1 (before every target)
        rank[targets] = torch.arange(n_predict)
        is_target = rank >= 0
        hidden = is_target[None, :] & (rank[None, :] >= rank[:, None])  # j a target not before i
        perm_mask[b] = (hidden & real[b][:, None]).float()
        chosen.append(targets.tolist())
    P = max(1, max(len(c) for c in chosen))
    mapping = torch.zeros(B, P, T)
    labels = torch.full((B, P), IGNORE, dtype=torch.long)
    for b, targets in enumerate(chosen):
        for p, t in enumerate(targets):
            mapping[b, p, t] = 1.0
            labels[b, p] = ids[b, t]
    return perm_mask.to(ids.device), mapping.to(ids.device), labels.to(ids.device)
