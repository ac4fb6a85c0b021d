"""ELECTRA's and masked LM's training steps move nothing between host and device (so ``train.execution.cuda_graphs``
can record them), checked with :mod:`tests.training.host_traffic` on the ``meta`` device and the CPU, padding included."""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F

from attnkit.models.bert import bert_preset
from attnkit.models.bert_heads import BertMLM
from attnkit.models.electra import ElectraPretraining, ElectraPretrainingConfig
from attnkit.objectives.electra import electra_loss
from attnkit.objectives.mlm import IGNORE
from tests.training.host_traffic import traffic


def batch(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked ids, the masked positions' labels and an attention mask with padding in the second row."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 60, (2, 12), generator=g)
    labels = torch.full_like(ids, IGNORE)
    labels[:, 3], labels[0, 7] = ids[:, 3], ids[0, 7]
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return ids.to(device), labels.to(device), mask.to(device)


def electra_step(device: str) -> Callable[[], Any]:
    torch.manual_seed(0)
    disc = bert_preset("bert-test").replace(d_model=32, n_heads=4)
    model = ElectraPretraining(ElectraPretrainingConfig(discriminator=disc, generator_fraction=0.25)).to(device).train()
    ids, labels, mask = batch(device)

    def step() -> None:
        out = model(ids, labels=labels, attention_mask=mask)
        total, _, _ = electra_loss(out.gen_logits, labels, out.disc_logits, out.replaced, mask)
        total.backward()

    return step


def mlm_step(device: str) -> Callable[[], Any]:
    torch.manual_seed(0)
    model = BertMLM(bert_preset("bert-test").replace(d_model=32, n_heads=4)).to(device).train()
    ids, labels, mask = batch(device)

    def step() -> None:
        logits = model(ids, attention_mask=mask).logits
        F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE).backward()

    return step


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("objective", ["electra", "mlm"])
def test_a_pretraining_step_moves_nothing_between_host_and_device(objective: str, device: str) -> None:
    step = (electra_step if objective == "electra" else mlm_step)(device)
    assert traffic(device, step) == []
