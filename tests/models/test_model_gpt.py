"""The GPT model: presets, initialisation, causality, padding, caches, save/load."""

from __future__ import annotations

import math

import pytest
import torch

import attnkit
from attnkit.errors import ConfigError
from attnkit.models.gpt import GPT, GPTConfig, gpt_preset


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(gpt_preset("gpt-tiny", **kw)).eval()


@pytest.mark.parametrize(
    "name, params",
    [("gpt2", 124_439_808), ("char-shakespeare", 10_770_816)],  # GPT-2 small as released; nanoGPT's 10.65M + positions
)
def test_preset_sizes(name, params):
    cfg = gpt_preset(name)
    n = cfg.vocab_size * cfg.d_model + cfg.context * cfg.d_model + cfg.n_layers * (12 * cfg.d_model**2 + 13 * cfg.d_model) + 2 * cfg.d_model
    assert n == params
    if name == "char-shakespeare":
        assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.context, cfg.dropout, cfg.attention.dropout) == (6, 6, 384, 256, 0.2, 0.2)
        assert GPT(cfg).num_parameters() == params


def test_gpt2_medium_shape():
    cfg = gpt_preset("gpt2-medium")
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.ffn_dim) == (24, 1024, 16, 4096)


def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="n_heads"):
        GPTConfig(d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="dropout"):
        GPTConfig(dropout=1.5)
    with pytest.raises(ConfigError, match="unknown config key 'n_embd'"):
        GPTConfig.from_dict({"n_embd": 3})


def test_tied_embeddings_and_gpt2_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=500, context=64, d_model=256, n_heads=4, n_layers=8))
    assert model.lm_head.weight is model.tok_embed.weight
    std = lambda t: float(t.detach().std())  # noqa: E731
    assert std(model.tok_embed.weight) == pytest.approx(0.02, rel=0.05)
    layer = model.decoder.layers[3]
    assert std(layer.self_attn.qkv_proj.weight) == pytest.approx(0.02, rel=0.05)
    scaled = 0.02 / math.sqrt(2 * 8)
    assert std(layer.self_attn.out_proj.weight) == pytest.approx(scaled, rel=0.05)
    assert std(layer.ffn.w2.weight) == pytest.approx(scaled, rel=0.05)
    assert float(layer.ffn.w1.bias.detach().abs().max()) == 0.0
    assert torch.equal(layer.res_attn.norm.weight, torch.ones(256))


def test_causal_future_tokens_do_not_change_past_logits():
    model = tiny()
    ids = torch.randint(0, 96, (2, 20))
    changed = ids.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % 96
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


def test_left_padding_matches_unpadded_rows():
    model = tiny()
    ids = torch.randint(4, 96, (1, 10))
    padded = torch.cat([torch.zeros(1, 5, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 5), torch.ones(1, 10)], dim=1)
    with torch.no_grad():
        ref = model(ids).logits
        got = model(padded, attention_mask=mask).logits[:, 5:]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_growing_cache_matches_full_forward():
    model = tiny()
    ids = torch.randint(0, 96, (2, 16))
    caches = model.new_caches()
    with torch.no_grad():
        full = model(ids).logits
        parts = [model(ids[:, :7], caches=caches).logits]
        for t in range(7, 16):
            parts.append(model(ids[:, t : t + 1], caches=caches).logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


def test_too_long_input_is_a_clear_error():
    model = tiny()
    with pytest.raises(ValueError, match="context of 64"):
        model(torch.zeros(1, 65, dtype=torch.long))


def test_save_and_load_round_trip(tmp_path):
    model = tiny(dropout=0.1)
    model.save_pretrained(tmp_path / "m")
    back = attnkit.load(tmp_path / "m").eval()
    assert isinstance(back, GPT) and back.config == model.config
    assert back.lm_head.weight is back.tok_embed.weight
    ids = torch.randint(0, 96, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, model(ids).logits)


def test_training_step_reduces_loss():
    model = tiny().train()
    ids = torch.randint(0, 96, (4, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        logits = model(ids[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 96), ids[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
