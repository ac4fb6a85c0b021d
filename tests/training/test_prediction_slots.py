"""The masked-LM and ELECTRA output layers run at the chosen positions alone and give the full path's numbers."""

from __future__ import annotations

import pytest
import torch

from attnkit.models.bert import bert_preset
from attnkit.models.bert_pretraining import BertPretraining, BertPretrainingConfig
from attnkit.models.electra import ElectraPretraining, ElectraPretrainingConfig
from attnkit.objectives.electra import electra_loss, sample_replacements
from attnkit.objectives.mlm import IGNORE, mask_tokens, prediction_slots
from attnkit.objectives.pretraining import pretraining_loss


def masked_batch(B: int = 5, T: int = 23, seed: int = 0, select: float = 0.15):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 99, (B, T), generator=g)
    maskable = torch.ones(B, T, dtype=torch.bool)
    maskable[:, 0] = False  # [CLS]
    maskable[1, :] = False  # a row with nothing to predict
    maskable[2, 15:] = False  # padding
    from attnkit.objectives.mlm import MaskingConfig

    inputs, labels = mask_tokens(ids, maskable, mask_id=4, random_ids=torch.arange(5, 99),
                                 config=MaskingConfig(select_prob=select), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[2, 15:] = 0
    return inputs, labels, mask


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("select", [0.15, 0.5])
def test_slots_hold_every_chosen_position_in_order(seed, select):
    _, labels, _ = masked_batch(seed=seed, select=select)
    positions, targets = prediction_slots(labels, expected=select)
    B, T = labels.shape
    P = positions.shape[1]
    assert P <= T and (P % 8 == 0 or P == T)
    for b in range(B):
        chosen = [t for t in range(T) if labels[b, t] != IGNORE]  # the naive loop
        assert positions[b, : len(chosen)].tolist() == chosen
        assert targets[b, : len(chosen)].tolist() == [int(labels[b, t]) for t in chosen]
        assert (targets[b, len(chosen):] == IGNORE).all() and (positions[b, len(chosen):] == 0).all()


def test_slots_never_cut_a_crowded_row():
    labels = torch.full((3, 40), IGNORE)
    labels[0] = torch.arange(40)  # every position chosen, far above the expected 15%
    positions, targets = prediction_slots(labels)
    assert positions.shape == (3, 40) and (targets[0] == torch.arange(40)).all()


def test_one_length_gives_one_slot_count():
    shapes = {prediction_slots(masked_batch(B=32, T=128, seed=s)[1])[0].shape for s in range(20)}
    assert shapes == {(32, 40)}  # twice the expected 19.2, rounded up to 8


def test_mlm_loss_and_gradients_at_the_slots_equal_the_full_output_layers():
    torch.manual_seed(0)
    enc = bert_preset("bert-test", d_model=32, n_heads=4, d_ff=64, vocab_size=99, dropout=0.0)
    model = BertPretraining(BertPretrainingConfig(encoder=enc, pair_task="none")).eval()  # no attention dropout
    ids, labels, mask = masked_batch()
    positions, targets = prediction_slots(labels)

    full = model(ids, attention_mask=mask)
    loss_full, _, n_full = pretraining_loss(full.mlm_logits, labels, None, None)
    loss_full.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    slots = model(ids, attention_mask=mask, positions=positions)
    assert slots.mlm_logits.shape == (*positions.shape, 99)
    loss_slots, _, n_slots = pretraining_loss(slots.mlm_logits, targets, None, None)
    loss_slots.backward()
    assert n_full == n_slots
    torch.testing.assert_close(loss_slots, loss_full)
    for k, p in model.named_parameters():
        if k in grads:
            torch.testing.assert_close(p.grad, grads[k], atol=1e-6, rtol=1e-5)


def test_sampling_at_the_slots_writes_the_full_paths_tokens():
    _, labels, _ = masked_batch(seed=3)
    ids = torch.randint(5, 99, labels.shape)
    logits = torch.randn(*labels.shape, 99)
    positions, targets = prediction_slots(labels)
    at_slots = logits.gather(1, positions[..., None].expand(-1, -1, 99))
    # a temperature this low makes the Gumbel-max draw the argmax: both paths draw the same tokens
    c_full, r_full = sample_replacements(logits, ids, labels, temperature=1e-6)
    c_slot, r_slot = sample_replacements(at_slots, ids, targets, positions=positions, temperature=1e-6)
    assert torch.equal(c_full, c_slot) and torch.equal(r_full, r_slot)
    unused = targets == IGNORE
    assert unused.any() and torch.equal(c_slot[:, 0], ids[:, 0])  # unused slots point at 0 and change nothing


def test_electra_losses_at_the_slots_equal_the_full_path():
    torch.manual_seed(0)
    disc = bert_preset("bert-test", d_model=64, n_heads=4, d_ff=128, d_embed=32, vocab_size=99, pooler=False, dropout=0.0)
    model = ElectraPretraining(ElectraPretrainingConfig(discriminator=disc, generator_fraction=0.25)).eval()
    ids, labels, mask = masked_batch(seed=1)
    positions, targets = prediction_slots(labels)
    full = model(ids, labels=labels, attention_mask=mask, temperature=1e-6)
    slots = model(ids, labels=targets, positions=positions, attention_mask=mask, temperature=1e-6)
    assert torch.equal(full.corrupted, slots.corrupted) and torch.equal(full.replaced, slots.replaced)
    torch.testing.assert_close(slots.disc_logits, full.disc_logits)
    a = electra_loss(full.gen_logits, labels, full.disc_logits, full.replaced, mask)
    b = electra_loss(slots.gen_logits, targets, slots.disc_logits, slots.replaced, mask)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
