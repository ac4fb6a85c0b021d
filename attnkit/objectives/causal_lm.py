"""Next-token prediction (causal language modelling, Radford et al. 2018, eq. (1)).

    L(U) = - sum_i log P(u_i | u_{i-k}, ..., u_{i-1})

averaged over the target tokens; targets equal to ``ignore_index`` do not count.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def causal_lm_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of ``logits: (B, T, V)`` against ``targets: (B, T)`` (already shifted).

    Returns:
        ``(mean loss in float32, number of counted target tokens)``.
    """
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore_index)
    return loss, (targets != ignore_index).sum()
