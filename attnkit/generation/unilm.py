"""Sequence-to-sequence generation with a UniLM model (Dong et al. 2019, section 2.2 and 3.2).

The source is ``[CLS] S [SEP]`` (segment 0) and the target grows one token at a time (segment 1):
a [MASK] is appended, the model predicts it under the seq2seq self-attention mask
(:func:`attnkit.data.unilm.unilm_mask`, the mask it was trained with), and the prediction replaces
the [MASK]; generation ends at [SEP] or after ``max_new_tokens``. Greedy, without a cache: every
step recomputes the sequence.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from attnkit.data.unilm import unilm_mask


@torch.no_grad()
def unilm_generate(model: nn.Module, source: Sequence[int], *, cls_id: int, sep_id: int, mask_id: int,
                   max_new_tokens: int = 32) -> list[int]:
    """Greedy UniLM decoding of the target for ``source``.

    Args:
        model: a :class:`~attnkit.models.unilm.UnilmMLM` (in eval mode).
        source: the source tokens, without [CLS] and [SEP].
        cls_id, sep_id, mask_id: the special tokens.
        max_new_tokens: the longest target.

    Returns:
        The target tokens, without the final [SEP].
    """
    device = next(model.parameters()).device
    prefix = [cls_id, *source, sep_id]
    target: list[int] = []
    for _ in range(max_new_tokens):
        ids = torch.tensor([prefix + target + [mask_id]], device=device)  # (1, T)
        segments = torch.tensor([[0] * len(prefix) + [1] * (len(target) + 1)], device=device)
        mask = unilm_mask("seq2seq", torch.ones_like(ids), segments)  # (1, T, T)
        logits = model(ids, segment_ids=segments, self_attention_mask=mask).logits  # (1, T, V)
        token = int(logits[0, -1].argmax())
        if token == sep_id:
            break
        target.append(token)
    return target
