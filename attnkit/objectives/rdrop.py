"""R-Drop: regularized dropout (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural
Networks", NeurIPS), section 2.1, eq. 3.

Each input goes through the model twice with different dropout masks, giving distributions
``P1`` and ``P2``; the loss adds to the cross-entropy of both the symmetric KL divergence
between them,

    L = 1/2 (CE(P1, y) + CE(P2, y)) + alpha * 1/2 (KL(P1 || P2) + KL(P2 || P1)),

per counted target, averaged over the counted targets (examples, or labelled tokens).

Deviation from eq. 3, which sums the two NLL terms ``-log P1(y|x) - log P2(y|x)``: the two
cross-entropies are averaged here, as in the authors' README example, so that ``alpha = 0`` is
ordinary fine-tuning at its usual scale. The whole loss is then half of eq. 3 with the paper's
alpha equal to ``2 * alpha``: to reproduce a paper setting ``alpha_paper``, use
``alpha = alpha_paper / 2``. The KL is summed over the classes and averaged over positions like
the cross-entropy (the README sums it over the batch, which ties alpha to the batch size).
Gradients flow through both distributions, as in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.objectives.label_smoothing import label_smoothed_cross_entropy


def symmetric_kl(logits1: Tensor, logits2: Tensor) -> Tensor:
    """``1/2 (KL(P1 || P2) + KL(P2 || P1))`` per position, ``P_i = softmax(logits_i)``, in float32.

    Written as ``1/2 sum_k (p1_k - p2_k) (log p1_k - log p2_k)``, the two directions added.

    Args:
        logits1, logits2: unnormalised scores of the same shape ``(..., C)``.

    Returns:
        Float32 tensor of shape ``(...)``, non-negative.
    """
    if logits1.shape != logits2.shape:
        raise ValueError(f"logits shapes {tuple(logits1.shape)} and {tuple(logits2.shape)} differ; R-Drop compares two passes of one batch")
    log_p1 = torch.log_softmax(logits1.float(), dim=-1)  # (..., C)
    log_p2 = torch.log_softmax(logits2.float(), dim=-1)  # (..., C)
    return 0.5 * ((log_p1.exp() - log_p2.exp()) * (log_p1 - log_p2)).sum(dim=-1)  # (...)


def rdrop_loss(logits1: Tensor, logits2: Tensor, targets: Tensor, *, alpha: float, epsilon: float = 0.0,
               ignore_index: int = -100) -> tuple[Tensor, Tensor]:
    """The R-Drop loss of two dropout passes over one batch (module docstring; eq. 3 of the paper).

    Positions whose target is ``ignore_index`` (padding, specials, non-first sub-words) count in
    neither term.

    Args:
        logits1, logits2: the two passes' scores, ``(B, C)`` (one label per sequence) or
            ``(B, T, C)`` (one per token), any float dtype.
        targets: class ids, ``(B,)`` or ``(B, T)``.
        alpha: weight of the symmetric KL term (``train.reg.rdrop``); 0 gives the mean of
            the two cross-entropies.
        epsilon: label smoothing of each cross-entropy (the convention of
            :func:`~attnkit.objectives.label_smoothing.label_smoothed_cross_entropy`).
        ignore_index: the target value that does not count.

    Returns:
        ``(mean loss in float32, number of counted targets)`` as the tasks' ``loss`` methods
        return it; the mean is 0 when nothing counts.
    """
    if alpha < 0:
        raise ValueError(f"alpha={alpha!r} is not allowed; must be >= 0")
    kl = symmetric_kl(logits1, logits2)  # (...) and checks the shapes
    ce1 = label_smoothed_cross_entropy(logits1, targets, epsilon, ignore_index, reduction="none")  # (...), 0 where ignored
    ce2 = label_smoothed_cross_entropy(logits2, targets, epsilon, ignore_index, reduction="none")  # (...)
    keep = targets != ignore_index  # (...)
    n = keep.sum()
    per_target = 0.5 * (ce1 + ce2) + alpha * kl.masked_fill(~keep, 0.0)  # (...)
    return per_target.sum() / n.clamp(min=1), n
