"""Cross-entropy for fine-tuning heads: one label per sequence, or one per token (Devlin et al. 2019, section 4).

    L = - mean_i log softmax(logits_i)[y_i]

over the counted targets; targets equal to ``ignore_index`` (padding, specials, and the
non-first sub-words of a word in NER) do not count. ``epsilon > 0`` smooths the targets as
``torch.nn.functional.cross_entropy(label_smoothing=epsilon)`` does (Szegedy et al. 2016).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def classification_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100, epsilon: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of ``logits: (B, C)`` against ``targets: (B,)``, or ``(B, T, C)`` against ``(B, T)``.

    Returns:
        ``(mean loss in float32, number of counted targets)``; the mean is 0 when nothing counts.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()  # (N, C)
    y = targets.reshape(-1)  # (N,)
    n = (y != ignore_index).sum()
    loss = F.cross_entropy(flat, y, ignore_index=ignore_index, reduction="sum", label_smoothing=epsilon) / n.clamp(min=1)
    return loss, n
