"""Hierarchical attention inside models, through the registry and config overrides: a GPT with ``attention.kind=hierarchical``
against the same GPT whose kernels are the loop reference of test_hierarchical, padded batches, cached generation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from attnkit.errors import ConfigError
from attnkit.generation.sampling import SamplingConfig, generate
from attnkit.models.bert import BertConfig, BertModel
from attnkit.models.gpt import GPT, GPTConfig, gpt_preset
from attnkit.models.transformer import AttentionConfig
from test_hierarchical import reference

BLOCK = 4


class Reference(nn.Module):
    """The loop reference as a kernel for right-padded key-padding masks (lengths read from the mask)."""

    def forward(self, q, k, v, *, mask=None, bias=None, causal=False, need_weights=False):
        assert bias is None and not need_weights and q.shape[1] == k.shape[1]
        lengths = None if mask is None else [int(n) for n in mask.reshape(mask.shape[0], -1).sum(-1)]
        return reference(q, k, v, BLOCK, causal, lengths)[0]


def with_reference(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if hasattr(m, "kernel") and type(m.kernel).__name__ == "HierarchicalAttention":
            m.kernel = Reference()
    return model


def tiny_gpt() -> GPT:
    cfg = gpt_preset("gpt-tiny", n_layers=2, d_model=16, n_heads=2, context=16)
    cfg = cfg.with_overrides(["attention.kind=hierarchical", f"attention.params.block={BLOCK}"])  # as --set model.attention...
    torch.manual_seed(0)
    return GPT(cfg).double().eval()


def test_gpt_with_padding_equals_the_reference_model() -> None:
    model = tiny_gpt()
    assert type(model.decoder.layers[0].self_attn.kernel).__name__ == "HierarchicalAttention"
    ref = with_reference(GPT(model.config).double().eval())
    ref.load_state_dict(model.state_dict())
    ids = torch.randint(0, 96, (2, 11))
    keep = torch.arange(11)[None, :] < torch.tensor([[11], [6]])  # right padding: the second row has 6 real tokens
    with torch.no_grad():
        got, want = model(ids, attention_mask=keep).logits, ref(ids, attention_mask=keep).logits
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
        dense = GPT(dataclasses.replace(model.config, attention=AttentionConfig())).double().eval()
        dense.load_state_dict(model.state_dict())
        assert (dense(ids).logits - model(ids).logits).abs().max() > 1e-4  # beyond one block the two differ


def test_bert_encoder_with_key_padding_equals_the_reference_model() -> None:
    """A non-causal model built from its config with ``attention.kind=hierarchical``."""
    cfg = BertConfig(vocab_size=50, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_positions=16)
    cfg = cfg.with_overrides(["attention.kind=hierarchical", f"attention.params.block={BLOCK}"])
    torch.manual_seed(1)
    model = BertModel(cfg).double().eval()
    ref = with_reference(BertModel(cfg).double().eval())
    ref.load_state_dict(model.state_dict())
    ids = torch.randint(5, 50, (2, 10))
    keep = torch.arange(10)[None, :] < torch.tensor([[10], [7]])
    with torch.no_grad():
        got, want = model(ids, attention_mask=keep), ref(ids, attention_mask=keep)
    torch.testing.assert_close(got.last_hidden, want.last_hidden, atol=1e-10, rtol=1e-10)


def test_cached_generation_equals_recomputing() -> None:
    model = tiny_gpt()
    prompt = [3, 1, 4, 1, 5]
    out = generate(model, [prompt], SamplingConfig(max_new_tokens=9, temperature=0.0))
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(9):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert out.tokens[0] == ids[0, len(prompt):].tolist()


def test_score_bias_positions_are_refused() -> None:
    with pytest.raises(ConfigError, match="hierarchical"):
        GPTConfig().with_overrides(["attention.kind=hierarchical", "attention.position.kind=alibi"])
    with pytest.raises(ConfigError, match="block"):
        GPT(gpt_preset("gpt-tiny").with_overrides(["attention.kind=hierarchical", "attention.params.block=0"]))
