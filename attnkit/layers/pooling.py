"""Mean pooling: one vector per sequence as the average of its real tokens' states.

    z_b = sum_t m_bt h_bt / max(1, sum_t m_bt)

with ``m_bt`` 1 at real tokens and 0 at padding, so padded positions neither count nor dilute
the mean (the pooling of Sentence-BERT, Reimers and Gurevych 2019, section 3, and of the
Long Range Arena classifiers, Tay et al. 2021). A row without real tokens pools to zeros.
"""

from __future__ import annotations

from torch import Tensor


def mean_pool(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Mean of ``hidden: (B, T, H)`` over the positions where ``attention_mask: (B, T)`` is nonzero.

    Args:
        hidden: the token states.
        attention_mask: 1/True at real tokens, 0/False at padding; None: every position is real.

    Returns:
        ``(B, H)``.
    """
    if attention_mask is None:
        return hidden.mean(dim=1)  # (B, H)
    m = attention_mask.bool().to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)  # (B, H)
