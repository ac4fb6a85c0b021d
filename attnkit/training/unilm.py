"""UniLM pretraining as a task for :class:`attnkit.training.Trainer` (Dong et al. 2019, section 2.3).

The data and the masking are BERT's (:class:`~attnkit.training.mlm.PretrainingTask`: packed
full-sentence sequences, 15% of the tokens chosen, 80/10/10); each batch then draws one
language model from the mixture (:func:`attnkit.data.unilm.pick_kind`) and carries its
self-attention mask (:func:`attnkit.data.unilm.unilm_mask`). A seq2seq batch splits each row into
source and target at a random token (:func:`attnkit.data.unilm.split_segments`) and gives the
target segment id 1. The loss is the masked-LM cross-entropy at the chosen positions, for every
kind (the cloze task under that kind's visibility). The held-out batches draw their kinds once,
with the masks, so every evaluation scores the same mixture.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from attnkit.data.pretraining import Pair, PretrainingBatch
from attnkit.data.unilm import UNILM_MIXTURE, MaskKind, pick_kind, split_segments, unilm_mask
from attnkit.objectives.pretraining import pretraining_loss
from attnkit.training.mlm import PretrainingTask


@dataclass
class UnilmBatch(PretrainingBatch):
    """A pretraining batch with the self-attention mask of its language model."""

    self_attention_mask: Tensor | None = None  # (B, T, T) bool
    kind: str = "bidirectional"


class UnilmTask(PretrainingTask):
    """Masked LM under a per-batch UniLM self-attention mask; ``mixture`` weights the four kinds."""

    gathers_predictions = False  # the model's output layer runs at every position

    def __init__(self, *args: Any, mixture: dict[MaskKind, float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mixture = dict(mixture or UNILM_MIXTURE)

    def _batch(self, pairs: Sequence[Pair], generator: torch.Generator) -> UnilmBatch:
        b = super()._batch(pairs, generator)
        kind = pick_kind(self.mixture, generator)
        if kind == "seq2seq":
            b.segment_ids = split_segments(b.attention_mask, b.maskable, generator)
        mask = unilm_mask(kind, b.attention_mask, b.segment_ids)
        return UnilmBatch(**{f.name: getattr(b, f.name) for f in fields(b)}, self_attention_mask=mask, kind=kind)

    def forward(self, model: nn.Module, batch: PretrainingBatch) -> tuple[Tensor, Tensor, Tensor, Any]:
        out = model(batch.ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids,
                    self_attention_mask=getattr(batch, "self_attention_mask", None))
        total, mlm, n = pretraining_loss(out.logits, batch.mlm_labels, None, None)
        return total, mlm, n, SimpleNamespace(mlm_logits=out.logits, pair_logits=None)
