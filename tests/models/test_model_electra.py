"""ELECTRA's generator and discriminator: widths, shared embeddings, no gradient through the sampling, save and load."""

from __future__ import annotations

import torch

import attnkit
from attnkit.models.bert import bert_preset
from attnkit.models.electra import ElectraPretraining, ElectraPretrainingConfig
from attnkit.objectives.electra import electra_loss
from attnkit.objectives.mlm import IGNORE


def tiny() -> ElectraPretraining:
    torch.manual_seed(0)
    disc = bert_preset("bert-test", d_model=64, n_heads=4, d_ff=128, d_embed=32, pooler=False, dropout=0.0)
    return ElectraPretraining(ElectraPretrainingConfig(discriminator=disc, generator_fraction=0.25))


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 99, (2, 12))
    labels = torch.full_like(ids, IGNORE)
    labels[:, 2:5] = ids[:, 2:5]
    ids[:, 2:5] = 4
    return ids, labels, torch.ones_like(ids)


def test_generator_is_a_quarter_width_and_shares_embeddings():
    m = tiny()
    g = m.config.generator
    assert (g.d_model, g.n_heads, g.d_ff, g.n_layers, g.d_embed) == (16, 1, 32, 2, 32)
    ge, de = m.generator.bert.embed, m.discriminator.bert.embed
    for name in ("tokens", "segments", "positions", "norm"):
        assert getattr(ge, name) is getattr(de, name)
    assert m.generator.decoder.weight is de.tokens.weight
    assert m.bert is m.discriminator.bert


def test_discriminator_loss_sends_no_gradient_into_the_generator_layers():
    m = tiny()
    ids, labels, mask = batch()
    out = m(ids, labels=labels, attention_mask=mask)
    _, _, disc = electra_loss(out.gen_logits, labels, out.disc_logits, out.replaced, mask)
    disc.backward()
    assert all(p.grad is None or not p.grad.any() for p in m.generator.bert.layers.parameters())
    assert m.discriminator.bert.embed.tokens.weight.grad.any()  # the shared embeddings learn from both
    assert torch.equal(out.corrupted[labels == IGNORE], ids[labels == IGNORE])


def test_save_and_load_keep_the_sharing(tmp_path):
    m = tiny().eval()
    m.save_pretrained(tmp_path / "m")
    back = attnkit.load(tmp_path / "m").eval()
    assert back.generator.bert.embed.tokens is back.discriminator.bert.embed.tokens
    ids, labels, mask = batch()
    g = torch.Generator().manual_seed(3)
    a = m(ids, labels=labels, attention_mask=mask, generator=g)
    g.manual_seed(3)
    b = back(ids, labels=labels, attention_mask=mask, generator=g)
    torch.testing.assert_close(a.disc_logits, b.disc_logits)
    torch.testing.assert_close(a.gen_logits, b.gen_logits)
