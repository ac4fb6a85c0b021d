"""The Llama-family GPT (RMSNorm, SwiGLU, rotary, grouped-query attention, window): its pieces against
independent references, and decoding over the fixed-size caches of generation against the full pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from attnkit.generation.sampling import SamplingConfig, decode_one_token, generate, prefill, static_caches
from attnkit.layers.ffn import GatedFeedForward
from attnkit.layers.norm import RMSNorm
from attnkit.models.gpt import GPT, GPTConfig, gpt_preset


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(gpt_preset("llama-tiny", **kw)).eval()


def test_llama_layers_and_parameter_count():
    model = tiny()
    c = model.config
    assert model.positions is None and not c.learned_positions
    assert model.lm_head.weight is not model.tok_embed.weight  # untied
    layer = model.decoder.layers[0]
    assert isinstance(layer.res_attn.norm, RMSNorm) and isinstance(model.decoder.norm, RMSNorm)
    assert isinstance(layer.ffn, GatedFeedForward) and layer.ffn.w1.bias is None
    assert layer.self_attn.qkv_proj.bias is None and layer.self_attn.out_proj.bias is None
    d, dkv, ff = c.d_model, c.kv_heads * c.head_dim, c.ffn_dim
    per_layer = d * (d + 2 * dkv) + d * d + 3 * d * ff + 2 * d
    assert model.num_parameters() == 2 * c.vocab_size * d + c.n_layers * per_layer + d
    tied = tiny(tie_embeddings=True)
    assert tied.lm_head.weight is tied.tok_embed.weight


def test_llama_124m_has_the_benchmarks_shape():
    with torch.device("meta"):
        model = GPT(gpt_preset("llama-124m"))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 124.7


def test_gpt2_defaults_are_unchanged():
    c = GPTConfig()
    assert (c.kv_heads, c.norm, c.ffn, c.window, c.tie_embeddings, c.learned_positions) == (12, "layer", "mlp", None, True, True)


@pytest.mark.parametrize("window", [None, 3])
def test_window_mask_is_the_naive_predicate(window):
    """Full attention over a window equals the model with every key outside it blanked, computed by hand."""
    model = tiny(window=window)
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = model._window_mask(0, 9, ids.device) if window else torch.ones(9, 9, dtype=torch.bool)
    i, j = torch.arange(9)[:, None], torch.arange(9)[None, :]
    assert torch.equal(mask | (j > i), (i - j < (window or 99)) | (j > i))
    with torch.no_grad():
        got = model(ids).logits
        # the same model, its window given as an explicit (B, 1, T, T) mask through each layer
        x = model.tok_embed(ids)
        h, _ = model.decoder(x, ((i - j < (window or 99)) & (j <= i))[None, None], causal=False)
        torch.testing.assert_close(got, model.lm_head(h))


@pytest.mark.parametrize("window", [None, 4])
def test_static_cache_decoding_equals_the_full_pass(window):
    """prefill + decode_one_token (generation's compiled path, run eagerly) on left-padded prompts."""
    model = tiny(window=window)
    ids = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(2))
    pad = torch.tensor([0, 3])
    keep = torch.arange(10)[None, :] >= pad[:, None]
    with torch.no_grad():
        full = model(ids, attention_mask=keep).logits  # (B, T, V)
        caches = static_caches(model, 2, 16)
        assert caches[0].k.shape == (2, model.config.kv_heads, 16, model.config.head_dim)
        logits = [prefill(model, ids[:, :5], pad, caches)]
        for s in range(5, 10):
            logits.append(decode_one_token(model, ids[:, s : s + 1], torch.tensor([s]), pad, caches))
    torch.testing.assert_close(torch.stack(logits[:-1], 1), full[:, 4:9], atol=1e-5, rtol=1e-5)


def test_the_window_changes_what_late_tokens_see():
    model = tiny(window=4)
    no_window = GPT(dataclasses.replace(model.config, window=None)).eval()
    no_window.load_state_dict(model.state_dict())
    ids = torch.randint(0, 96, (1, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits[:, :4], no_window(ids).logits[:, :4])
        assert not torch.allclose(model(ids).logits[:, -1], no_window(ids).logits[:, -1])


@pytest.mark.slow
def test_compiled_decoding_equals_eager():
    model = tiny(window=5)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9]]
    cfg = SamplingConfig(max_new_tokens=12, temperature=0)
    assert generate(model, prompts, cfg, compile=True).tokens == generate(model, prompts, cfg).tokens
