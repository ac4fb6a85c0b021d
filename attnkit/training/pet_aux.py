"""PET's auxiliary language-modelling loss (Schick & Schütze 2021, section 3.1).

With a few labelled examples, fine-tuning the masked LM on the cloze loss alone can make it forget
the language it was trained on. PET keeps masked-LM training going on unlabelled examples alongside:

    L = (1 - alpha) * L_CE + alpha * L_MLM,    alpha = 1e-4

``L_CE`` is the cloze cross-entropy of the labelled batch (eq. 3), ``L_MLM`` BERT's masked-LM loss
on unlabelled inputs put through the same pattern, ``P(x)``, masked as in pretraining (15% of the
real, non-special tokens chosen; 80/10/10). The paper takes alpha small because the language-model
loss is much larger than the cloze loss. Its released scripts draw 3 unlabelled examples per
labelled one (``ratio``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from attnkit.config import check
from attnkit.data.batching import pad
from attnkit.objectives.mlm import MaskingConfig, mask_tokens, prediction_slots

ALPHA = 1e-4  # section 3.1
RATIO = 3  # unlabelled rows per labelled row in a step (the released scripts: 1 labelled, 3 unlabelled)


@dataclass
class AuxiliaryLM:
    """The unlabelled cloze rows and how they enter the loss.

    Args:
        rows: token ids of ``[CLS] P(x) [SEP]`` for unlabelled ``x`` (:func:`~attnkit.training.pet.encode_cloze`).
        mask_id: the [MASK] id.
        random_ids: ``(N,)`` ids a random replacement draws from.
        special_ids: ids never chosen ([CLS], [SEP], [PAD], [MASK], ...): the pattern's own mask stays.
        alpha: the weight of the masked-LM term.
        ratio: unlabelled rows per labelled row in a batch.
        masking: BERT's proportions.
    """

    rows: list[list[int]]
    mask_id: int
    random_ids: Tensor
    special_ids: Sequence[int]
    alpha: float = ALPHA
    ratio: int = RATIO
    masking: MaskingConfig = MaskingConfig()

    def __post_init__(self) -> None:
        check(0.0 < self.alpha < 1.0, "alpha", self.alpha, "must be in (0, 1) (PET: 1e-4)")
        check(self.ratio >= 1, "ratio", self.ratio, "must be >= 1")
        check(len(self.rows) > 0, "rows", len(self.rows), "must hold at least one unlabelled row")

    def batch(self, n_labelled: int, pad_id: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``ratio * n_labelled`` rows drawn at random and masked.

        Returns:
            ``(ids (R, T), attention_mask (R, T), positions (R, P), targets (R, P))``: the masked input, and the chosen
            positions with their original ids (:func:`~attnkit.objectives.mlm.prediction_slots`).
        """
        index = torch.randint(len(self.rows), (self.ratio * n_labelled,), generator=generator).tolist()
        ids, mask = pad([self.rows[i] for i in index], pad_id, return_mask=True)  # (R, T)
        maskable = mask.bool() & ~torch.isin(ids, torch.tensor(list(self.special_ids), dtype=torch.long))
        inputs, labels = mask_tokens(ids, maskable, mask_id=self.mask_id, random_ids=self.random_ids, config=self.masking,
                                     generator=generator)
        positions, targets = prediction_slots(labels, expected=self.masking.select_prob)
        return inputs, mask.long(), positions, targets

    def combine(self, cloze_loss: Tensor, lm_loss: Tensor) -> Tensor:
        """``(1 - alpha) * L_CE + alpha * L_MLM``."""
        return (1.0 - self.alpha) * cloze_loss + self.alpha * lm_loss


__all__ = ["ALPHA", "RATIO", "AuxiliaryLM"]
