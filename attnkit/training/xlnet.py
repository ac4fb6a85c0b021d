"""XLNet pretraining as a task for :class:`attnkit.training.Trainer` (Yang et al. 2019).

The sequences are BERT's (:class:`~attnkit.training.mlm.PretrainingTask`: packed full-sentence
sequences, fixed by ``(seed, epoch)``), left unmasked; each batch draws a factorisation order per row
and predicts the last ``1/K`` of it (:func:`attnkit.data.permutation.permutation_inputs`), and the loss
is the mean cross-entropy of the query stream at those positions. Evaluation reports it as
``mlm_loss`` and ``mlm_accuracy`` (with fixed orders) and ``loss``.

With ``memory=True`` each sequence is two segments, as section 2.3 describes Transformer-XL's
recurrence in XLNet: the first half runs with its own factorisation order and its content states are
cached (gradient stopped); the second half, with another order, attends to that memory as well. Both
halves' targets count in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from attnkit.data.permutation import permutation_inputs
from attnkit.data.pretraining import Pair, PretrainingBatch, collate
from attnkit.objectives.pretraining import pretraining_loss
from attnkit.training.mlm import PretrainingTask


@dataclass
class PermutationBatch(PretrainingBatch):
    """A batch with its factorisation orders; ``mlm_labels`` holds the ``(B, P)`` targets."""

    perm_mask: Tensor | None = None  # (B, T, T); with a split, the first segment's (B, S, S)
    target_mapping: Tensor | None = None  # (B, P, T); with a split, the first segment's (B, P1, S)
    split: int = 0  # > 0: two segments, ids[:, :split] and ids[:, split:]
    perm_mask_next: Tensor | None = None  # the second segment's (B, T - S, T - S)
    target_mapping_next: Tensor | None = None  # (B, P2, T - S); mlm_labels is then (B, P1 + P2)


class XLNetTask(PretrainingTask):
    """Permutation LM with partial prediction over BERT's pretraining sequences; ``k`` as XLNet's K (6)."""

    def __init__(self, *args: Any, k: float = 6.0, memory: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.k, self.memory = k, memory

    def _batch(self, pairs: Sequence[Pair], generator: torch.Generator) -> PermutationBatch:
        t = self.tok
        b = collate(pairs, cls_id=t.cls_id, sep_id=t.sep_id, pad_id=t.pad_id, special_ids=self.special_ids, with_labels=False)
        T = b.ids.shape[1]
        split = (T + 1) // 2 if self.memory and T > 1 else 0
        parts = [slice(0, split), slice(split, T)] if split else [slice(0, T)]
        made = [permutation_inputs(b.ids[:, p], b.attention_mask[:, p], k=self.k, maskable=b.maskable[:, p], generator=generator)
                for p in parts]
        b.mlm_labels = torch.cat([labels for _, _, labels in made], dim=1)  # (B, P1 [+ P2])
        extra = dict(split=split, perm_mask_next=made[1][0], target_mapping_next=made[1][1]) if split else {}
        return PermutationBatch(**{f.name: getattr(b, f.name) for f in fields(b)}, perm_mask=made[0][0], target_mapping=made[0][1],
                                **extra)

    def forward(self, model: nn.Module, batch: PretrainingBatch) -> tuple[Tensor, Tensor, Tensor, Any]:
        b: PermutationBatch = batch  # type: ignore[assignment]
        s = b.split
        first = slice(0, s) if s else slice(None)
        out = model(b.ids[:, first], perm_mask=b.perm_mask, target_mapping=b.target_mapping, segment_ids=b.segment_ids[:, first],
                    attention_mask=b.attention_mask[:, first], mem_len=s)
        logits = out.logits
        if s:  # the second segment reads the first one's cached content states
            nxt = model(b.ids[:, s:], perm_mask=b.perm_mask_next, target_mapping=b.target_mapping_next, segment_ids=b.segment_ids[:, s:],
                        attention_mask=b.attention_mask[:, s:], mems=out.mems)
            logits = torch.cat([logits, nxt.logits], dim=1)  # (B, P1 + P2, V)
        total, lm, n = pretraining_loss(logits, b.mlm_labels, None, None)
        return total, lm, n, SimpleNamespace(mlm_logits=logits, pair_logits=None)
