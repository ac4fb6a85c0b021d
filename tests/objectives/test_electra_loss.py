"""ELECTRA's replaced-token detection against transformers' ElectraForPreTraining, and the sampling against softmax."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attnkit
from attnkit.objectives.electra import discriminator_loss, electra_loss, sample_replacements
from attnkit.objectives.mlm import IGNORE

transformers = pytest.importorskip("transformers")


def test_discriminator_logits_and_loss_match_electra_for_pretraining(tmp_path):
    torch.manual_seed(0)
    cfg = transformers.ElectraConfig(vocab_size=120, embedding_size=24, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    hf = transformers.ElectraForPreTraining(cfg).eval()
    hf.save_pretrained(tmp_path)
    ours = attnkit.load(tmp_path).eval()
    assert type(ours).__name__ == "ElectraDiscriminator"
    ids = torch.randint(5, 120, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    labels = (torch.rand(ids.shape) < 0.3).long()
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, labels=labels)
        got = ours(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], ref.logits[real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(discriminator_loss(got, labels.bool(), mask), ref.loss, atol=1e-6, rtol=1e-5)


def test_sampling_draws_from_the_generator_softmax_at_masked_positions_only():
    g = torch.Generator().manual_seed(1)
    logits = torch.tensor([2.0, 0.0, 1.0, -1.0, 0.5]).expand(1, 4000, 5).contiguous()  # (1, T, V)
    inputs = torch.full((1, 4000), 3)
    labels = torch.full((1, 4000), IGNORE)
    labels[0, ::2] = 0  # even positions masked, original token 0
    corrupted, replaced = sample_replacements(logits, inputs, labels, generator=g)
    assert (corrupted[0, 1::2] == 3).all() and not replaced[0, 1::2].any()
    freq = torch.bincount(corrupted[0, ::2], minlength=5).float() / 2000
    torch.testing.assert_close(freq, torch.softmax(logits[0, 0], -1), atol=0.03, rtol=0)
    assert torch.equal(replaced[0, ::2], corrupted[0, ::2] != 0)  # a sample equal to the original counts as original
    hot, _ = sample_replacements(logits, inputs, labels, temperature=1e-3, generator=g)
    assert (hot[0, ::2] == 0).all()  # temperature -> 0: the argmax


def test_electra_loss_is_mlm_plus_50_times_bce():
    torch.manual_seed(2)
    gen = torch.randn(2, 6, 10)
    labels = torch.full((2, 6), IGNORE)
    labels[0, 1], labels[1, 4] = 3, 7
    disc = torch.randn(2, 6)
    replaced = torch.rand(2, 6) < 0.3
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    total, g, d = electra_loss(gen, labels, disc, replaced, mask)
    ref_g = F.cross_entropy(gen.reshape(-1, 10), labels.reshape(-1), ignore_index=IGNORE)
    ref_d = F.binary_cross_entropy_with_logits(disc[mask.bool()], replaced[mask.bool()].float())
    torch.testing.assert_close(g, ref_g)
    torch.testing.assert_close(d, ref_d)
    torch.testing.assert_close(total, ref_g + 50 * ref_d)
    none = torch.full((2, 6), IGNORE)
    total, g, _ = electra_loss(gen, none, disc, replaced, mask)
    assert g.item() == 0.0 and torch.isfinite(total)
