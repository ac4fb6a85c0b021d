"""BERT's pretraining loss: masked LM plus the sentence-pair task (Devlin et al. 2019, appendix A.2).

    L = mean over chosen tokens of CE(mlm_logits, original token)  +  mean over rows of CE(pair_logits, IsNext)

The first term counts only the positions chosen for prediction (the rest carry ``IGNORE``,
:mod:`attnkit.objectives.mlm`); the second is next-sentence prediction (BERT) or sentence-order
prediction (ALBERT, Lan et al. 2020, section 3.1), absent when the model has no pair head.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from attnkit.objectives.mlm import IGNORE


def pretraining_loss(mlm_logits: Tensor, mlm_labels: Tensor, pair_logits: Tensor | None, pair_labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Masked-LM plus sentence-pair loss.

    Args:
        mlm_logits: ``(B, T, V)``.
        mlm_labels: ``(B, T)``, the original token at chosen positions, :data:`IGNORE` elsewhere.
        pair_logits: ``(B, 2)`` or None.
        pair_labels: ``(B,)`` or None.

    Returns:
        ``(total, mlm mean, number of chosen tokens)``; a batch with no chosen token has an
        MLM term of 0 rather than NaN.
    """
    n = (mlm_labels != IGNORE).sum()
    mlm_sum = F.cross_entropy(mlm_logits.reshape(-1, mlm_logits.shape[-1]).float(), mlm_labels.reshape(-1),
                              ignore_index=IGNORE, reduction="sum")
    mlm = mlm_sum / n.clamp(min=1)
    total = mlm
    if pair_logits is not None and pair_labels is not None:
        total = total + F.cross_entropy(pair_logits.float(), pair_labels)
    return total, mlm, n
