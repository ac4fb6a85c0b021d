"""XLNet pretraining as a task for :class:`attnkit.training.Trainer` (Yang et al. 2019).

The sequences are BERT's (:class:`~attnkit.training.mlm.PretrainingTask`: packed full-sentence
sequences, fixed by ``(seed, epoch)``), left unmasked; each batch draws a factorisation order per row
and predicts the last ``1/K`` of it (:func:`attnkit.data.permutation.permutation_inputs`), and the loss
is the mean cross-entropy of the query stream at those positions. Evaluation reports it as
``mlm_loss`` and ``mlm_accuracy`` (with fixed orders) and ``loss``.
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

    perm_mask: Tensor | None = None  # (B, T, T)
    target_mapping: Tensor | None = None  # (B, P, T)


class XLNetTask(PretrainingTask):
    """Permutation LM with partial prediction over BERT's pretraining sequences; ``k`` as XLNet's K (6)."""

    def __init__(self, *args: Any, k: float = 6.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.k = k

    def _batch(self, pairs: Sequence[Pair], generator: torch.Generator) -> PermutationBatch:
        t = self.tok
        b = collate(pairs, cls_id=t.cls_id, sep_id=t.sep_id, pad_id=t.pad_id, special_ids=self.special_ids, with_labels=False)
        perm, mapping, labels = permutation_inputs(b.ids, b.attention_mask, k=self.k, maskable=b.maskable, generator=generator)
        b.mlm_labels = labels
        return PermutationBatch(**{f.name: getattr(b, f.name) for f in fields(b)}, perm_mask=perm, target_mapping=mapping)

    def forward(self, model: nn.Module, batch: PretrainingBatch) -> tuple[Tensor, Tensor, Tensor, Any]:
        out = model(batch.ids, perm_mask=batch.perm_mask, target_mapping=batch.target_mapping,  # type: ignore[attr-defined]
                    segment_ids=batch.segment_ids, attention_mask=batch.attention_mask)
        total, lm, n = pretraining_loss(out.logits, batch.mlm_labels, None, None)
        return total, lm, n, SimpleNamespace(mlm_logits=out.logits, pair_logits=None)
