"""ELECTRA pretraining as a task for :class:`attnkit.training.Trainer` (Clark et al. 2020).

The data are BERT's (:class:`~attnkit.training.mlm.PretrainingTask`: packed full-sentence
sequences, dynamic masking per batch, fixed by ``(seed, epoch, batch)``); the masking puts
[MASK] at every chosen position (section 2: ``x_masked = REPLACE(x, m, [MASK])``). The model is
:class:`~attnkit.models.electra.ElectraPretraining` and the loss eq. 2
(:func:`~attnkit.objectives.electra.electra_loss`). Evaluation on the held-out sequences, with
fixed masks and fixed samples, reports the generator's ``mlm_loss`` and ``mlm_accuracy``, the
discriminator's ``disc_loss``, ``disc_accuracy`` over every real token, ``disc_auc`` (the area under
its ROC curve there: 0.5 is no signal, and unlike the accuracy it shows what the discriminator has learned
before its logits cross the decision threshold) and ``replaced_fraction`` (the share of real tokens the
generator changed), and ``loss`` = ``mlm_loss + disc_weight * disc_loss``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from attnkit.data.pretraining import PretrainingBatch
from attnkit.metrics import roc_auc
from attnkit.objectives.electra import DISC_WEIGHT, electra_loss
from attnkit.objectives.mlm import IGNORE
from attnkit.training.dev import dev_pass
from attnkit.training.mlm import PretrainingTask, prediction_targets


class ElectraTask(PretrainingTask):
    """Replaced-token detection over BERT's pretraining data; ``disc_weight`` is lambda of eq. 2 (50)."""

    def __init__(self, *args: Any, disc_weight: float = DISC_WEIGHT, temperature: float = 1.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.disc_weight, self.temperature = disc_weight, temperature

    def electra_forward(self, model: nn.Module, batch: PretrainingBatch, generator: torch.Generator | None = None) -> tuple[Any, ...]:
        labels = prediction_targets(batch)
        out = model(batch.ids, labels=labels, positions=batch.mlm_positions, attention_mask=batch.attention_mask,
                    segment_ids=batch.segment_ids, temperature=self.temperature, generator=generator)
        total, gen, disc = electra_loss(out.gen_logits, labels, out.disc_logits, out.replaced, batch.attention_mask,
                                        self.disc_weight)
        return total, gen, disc, out

    def loss(self, model: nn.Module, batch: PretrainingBatch) -> tuple[Tensor, Tensor]:
        total, _, _, _ = self.electra_forward(model, batch)
        return total, batch.attention_mask.sum()  # the discriminator's term counts every real token

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if not self.valid_pairs:
            return {}
        if self._eval_batches is None:
            g = torch.Generator().manual_seed(54321)
            self._eval_batches = [self._batch(self.valid_pairs[i : i + self.batch_size], g).to(self.device)
                                  for i in range(0, len(self.valid_pairs), self.batch_size)]
        sampler = torch.Generator(device=self.device).manual_seed(12345)  # the same samples at every evaluation
        logits, targets = [], []  # the discriminator's logits and targets at the real tokens, for its AUC

        def step(b: PretrainingBatch) -> tuple[Tensor, Tensor, Tensor]:
            _, gen, disc, out = self.electra_forward(model, b, sampler)
            labels = prediction_targets(b)
            picked = labels != IGNORE
            real = b.attention_mask.bool()
            n_real = real.sum()
            hits = (out.gen_logits.argmax(-1)[picked] == labels[picked]).sum().float()
            disc_hits = ((out.disc_logits > 0) == out.replaced)[real].sum().float()
            logits.append(out.disc_logits[real].float())
            targets.append(out.replaced[real])
            return gen, picked.sum(), torch.stack([hits, disc * n_real, disc_hits, out.replaced[real].sum().float(), n_real.float()])

        result = dev_pass(step, self._eval_batches)
        hits, disc_sum, disc_hits, replaced, n_real = torch.stack(result.outputs).sum(0).tolist()
        metrics = {"mlm_loss": result.loss, "mlm_accuracy": hits / max(result.count, 1), "disc_loss": disc_sum / max(n_real, 1),
                   "disc_accuracy": disc_hits / max(n_real, 1), "replaced_fraction": replaced / max(n_real, 1)}
        metrics["loss"] = metrics["mlm_loss"] + self.disc_weight * metrics["disc_loss"]
        metrics["disc_auc"] = roc_auc(torch.cat(logits), torch.cat(targets)) if logits else float("nan")
        return metrics
