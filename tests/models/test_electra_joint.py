"""ELECTRA's joint training (Clark et al. 2020, eq. 2) step for step against transformers' ElectraForMaskedLM (generator)
and ElectraForPreTraining (discriminator), built from config classes and sharing their embeddings as the paper's code does."""

from __future__ import annotations

import pytest
import torch

from attnkit.hub.bert import save_hf_bert
from attnkit.models.bert import bert_preset
from attnkit.models.electra import ElectraPretraining, ElectraPretrainingConfig
from attnkit.objectives.electra import electra_loss
from attnkit.objectives.mlm import IGNORE, prediction_slots
from attnkit.training.optim import build_optimizer

transformers = pytest.importorskip("transformers")

V, B, T, STEPS = 60, 3, 16, 4


def reference(model: ElectraPretraining, tmp_path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The two Hugging Face models at attnkit's weights, with one embedding module (tokens, positions, segments, their
    LayerNorm) and the generator's output layer tied to the token embeddings."""
    save_hf_bert(model.discriminator, tmp_path / "d", family="electra")
    disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "d")
    save_hf_bert(model.generator.bert, tmp_path / "g", family="electra")
    config = transformers.ElectraConfig.from_pretrained(tmp_path / "g")
    gen = transformers.ElectraForMaskedLM(config)
    gen.electra.load_state_dict(transformers.ElectraModel.from_pretrained(tmp_path / "g").state_dict())
    head = model.generator
    with torch.no_grad():
        for ours, theirs in ((head.transform, gen.generator_predictions.dense), (head.norm, gen.generator_predictions.LayerNorm)):
            theirs.weight.copy_(ours.weight)
            theirs.bias.copy_(ours.bias)
        gen.generator_lm_head.bias.copy_(head.decoder.bias)
    gen.electra.embeddings = disc.electra.embeddings
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight
    return gen, disc


def reference_step(gen, disc, ids, labels, mask, noise) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generator MLM loss, a sample from its softmax at the masked positions (Gumbel-max with ``noise``), the
    discriminator's BCE over the real tokens (a sample equal to the original counts as original)."""
    g = gen(input_ids=ids, attention_mask=mask, labels=labels)
    masked = labels != IGNORE  # (B, T)
    with torch.no_grad():
        logits = g.logits[masked].float()  # (M, V) in row order, as the slots hold them
        sampled = (logits - torch.log(-torch.log(noise))).argmax(-1)  # (M,)
        corrupted = ids.clone()
        corrupted[masked] = sampled
        replaced = (corrupted != torch.where(masked, labels, ids)) & mask.bool()
    d = disc(input_ids=corrupted, attention_mask=mask, labels=replaced.long())
    return g.loss, d.loss, replaced


def decay_groups(*models: torch.nn.Module, decay: float) -> list[dict]:
    """ELECTRA's AdamW groups: no weight decay on LayerNorm and biases; shared tensors once."""
    seen, on, off = set(), [], []
    for m in models:
        for name, p in m.named_parameters():
            if id(p) not in seen:
                seen.add(id(p))
                (off if "LayerNorm" in name or name.endswith("bias") else on).append(p)
    return [{"params": on, "weight_decay": decay}, {"params": off, "weight_decay": 0.0}]


def test_joint_training_matches_transformers_step_for_step(tmp_path):
    torch.manual_seed(0)
    disc_config = bert_preset("bert-test", vocab_size=V, d_model=32, n_heads=4, d_ff=64, d_embed=16, pooler=False, dropout=0.0)
    disc_config = disc_config.replace(attention=disc_config.attention.replace(dropout=0.0))
    model = ElectraPretraining(ElectraPretrainingConfig(discriminator=disc_config, generator_fraction=0.25))
    model.init_replaced_prior(0.15)
    gen, disc = reference(model, tmp_path)
    opt = build_optimizer(model, "adamw", 1e-3, (0.9, 0.999), 1e-6, 0.01)
    ref_opt = torch.optim.AdamW(decay_groups(disc, gen, decay=0.01), lr=1e-3, betas=(0.9, 0.999), eps=1e-6)

    for step in range(STEPS):
        original = torch.randint(5, V, (B, T))
        mask = torch.ones(B, T, dtype=torch.long)
        mask[1, 11:] = 0  # padding
        original[mask == 0] = 0
        chosen = (torch.rand(B, T) < 0.3) & mask.bool()
        chosen[:, 0] = False
        labels = torch.where(chosen, original, IGNORE)
        ids = torch.where(chosen, 4, original)  # [MASK] at every chosen position
        positions, targets = prediction_slots(labels, expected=0.3)

        sampler = torch.Generator().manual_seed(step)
        out = model(ids, labels=targets, positions=positions, attention_mask=mask, generator=sampler)
        total, g_loss, d_loss = electra_loss(out.gen_logits, targets, out.disc_logits, out.replaced, mask)
        # the same uniform draws attnkit's sampling took: (B, P, V), then those of the filled slots in row order
        noise = torch.rand((B, positions.shape[1], V), generator=torch.Generator().manual_seed(step)).clamp_(1e-9, 1 - 1e-9)
        ref_g, ref_d, ref_replaced = reference_step(gen, disc, ids, labels, mask, noise[targets != IGNORE])

        torch.testing.assert_close(g_loss, ref_g, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(d_loss, ref_d, atol=1e-5, rtol=1e-5)
        assert torch.equal(out.replaced, ref_replaced)
        for loss, params, optimizer in ((total, list(model.parameters()), opt),
                                        (ref_g + 50 * ref_d, [p for g in ref_opt.param_groups for p in g["params"]], ref_opt)):
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()

    # the shared embeddings learned from both losses alike
    torch.testing.assert_close(model.discriminator.bert.embed.tokens.weight, disc.electra.embeddings.word_embeddings.weight,
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.generator.bert.embed.project.weight, gen.electra.embeddings_project.weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(model.discriminator.out.bias, disc.discriminator_predictions.dense_prediction.bias, atol=1e-5, rtol=1e-4)
