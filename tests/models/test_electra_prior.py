"""ELECTRA's discriminator starts at the prior of replaced-token detection, so its encoder has no constant to learn."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import attnkit
from attnkit.cli.main import main
from attnkit.errors import ConfigError
from attnkit.models.bert import bert_preset
from attnkit.models.electra import ElectraPretraining, ElectraPretrainingConfig
from attnkit.objectives.electra import discriminator_loss

TEXT = "".join(f"To be, or not to be, that is the question {i}:\nWhether 'tis nobler in the mind to suffer\n"
               f"The slings and arrows of outrageous fortune.\n\n" for i in range(30))


def tiny() -> ElectraPretraining:
    disc = bert_preset("bert-test", d_embed=16)
    return ElectraPretraining(ElectraPretrainingConfig(discriminator=disc, generator_fraction=0.25))


def test_prior_bias_gives_the_binary_entropy_before_any_step():
    torch.manual_seed(0)
    model = tiny()
    model.init_replaced_prior(0.15)
    assert torch.sigmoid(model.discriminator.out.bias).item() == pytest.approx(0.15, abs=1e-6)
    with torch.no_grad():
        model.discriminator.out.weight.zero_()  # the logit is the bias alone
    ids = torch.randint(5, 99, (4, 40))
    replaced = torch.rand(4, 40) < 0.15
    mask = torch.ones(4, 40, dtype=torch.long)
    logits = model.discriminator(ids, attention_mask=mask).logits  # (B, T)
    q = replaced.float().mean().item()  # cross-entropy of a constant 0.15 guess against this share of positives
    expected = -(q * math.log(0.15) + (1 - q) * math.log(0.85))
    assert discriminator_loss(logits, replaced, mask).item() == pytest.approx(expected, rel=1e-5)
    assert F.binary_cross_entropy(torch.full((160,), 0.15), replaced.flatten().float()).item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="replaced"):
        model.init_replaced_prior(1.0)


def test_train_electra_starts_the_discriminator_at_the_masking_rate(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    args = ["train", "electra", "--text", str(tmp_path / "t.txt"), "--out", str(out), "--no-progress", "--vocab-size", "120",
            "--max-seq-len", "24"]
    for kv in ("model.d_model=32", "model.n_heads=4", "model.d_ff=64", "model.n_layers=1", "model.d_embed=16", "train.steps=1",
               "train.batch_size=4", "train.eval.every=1", "train.schedule.warmup=0", "train.optim.lr=1e-9", "train.device=cpu",
               "masking.select_prob=0.2", "data.max_eval_pairs=8", "data.valid_fraction=0.1"):
        args += ["--set", kv]
    assert main(args) == 0
    model = attnkit.load(out / "model")
    # lr 1e-9: the saved weights are the initial ones; the bias is the log-odds of the masking rate, not zero
    torch.testing.assert_close(model.discriminator.out.bias, torch.tensor([math.log(0.2 / 0.8)]), atol=1e-6, rtol=0)
