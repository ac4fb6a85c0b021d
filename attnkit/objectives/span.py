"""Extractive question answering's span loss (Devlin et al. 2019, section 4.2).

A start vector S and an end vector E score every token, ``P_i = softmax(S . T_i)`` over the
window's tokens; "the training objective is the sum of the log-likelihoods of the correct start
and end positions". Here each log-likelihood is averaged over the windows and the two are
averaged, ``(CE(start) + CE(end)) / 2``, as the released BERT code does. A window that does not
contain the answer points both labels at [CLS] (position 0).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def span_loss(start_logits: Tensor, end_logits: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """``(CE(start) + CE(end)) / 2``, averaged over windows.

    Args:
        start_logits, end_logits: ``(B, T)``, any float dtype (computed in float32).
        start, end: ``(B,)`` gold positions.

    Returns:
        The scalar loss.
    """
    return (F.cross_entropy(start_logits.float(), start) + F.cross_entropy(end_logits.float(), end)) / 2
