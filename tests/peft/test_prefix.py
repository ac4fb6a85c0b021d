"""Prefix tuning inside attention against the attention computed by hand; padding masks; the reparameterisation."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.attention.multihead import MultiHeadAttention
from attnkit.models.bert import BertModel, bert_preset
from attnkit.peft import PrefixConfig, apply_prefix
from attnkit.peft.prefix import PrefixKernel, PrefixTable


def test_prefix_attention_equals_the_concatenated_keys_by_hand() -> None:
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2).eval()
    table = PrefixTable(3, 1, 16)
    mha.kernel = PrefixKernel(mha.kernel, table, 0, 2)
    x = torch.randn(2, 5, 16)
    q, k, v = mha.qkv_proj(x).split(16, dim=-1)
    pk, pv = table.table.view(3, 2, 16)[:, 0], table.table.view(3, 2, 16)[:, 1]  # (P, d): layer 0's keys, values
    k = torch.cat([pk.expand(2, 3, 16), k], 1)
    v = torch.cat([pv.expand(2, 3, 16), v], 1)
    heads = lambda t: t.view(2, -1, 2, 8).transpose(1, 2)  # noqa: E731
    scores = heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(8)  # (B, H, 5, 3 + 5)
    causal = torch.ones(5, 8, dtype=torch.bool).tril(3)  # every query sees the prefix and the tokens up to itself
    out = (scores.masked_fill(~causal, float("-inf")).softmax(-1) @ heads(v)).transpose(1, 2).reshape(2, 5, 16)
    torch.testing.assert_close(mha(x, causal=True)[0], mha.out_proj(out), atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_the_real_tokens() -> None:
    torch.manual_seed(0)
    model = apply_prefix(BertModel(bert_preset("bert-test")).eval(), PrefixConfig(n_virtual=4, reparam=False))
    ids = torch.randint(1, 99, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 4:] = 0
    batched = model(ids, attention_mask=mask).last_hidden
    alone = model(ids[1:, :4]).last_hidden
    torch.testing.assert_close(batched[1:, :4], alone, atol=1e-5, rtol=1e-5)


def test_reparameterised_table_is_the_mlp_output_and_freezes_to_it() -> None:
    torch.manual_seed(0)
    model = apply_prefix(BertModel(bert_preset("bert-test")).eval(), PrefixConfig(n_virtual=3, reparam=True, hidden=16))
    t = model.prefix_table
    torch.testing.assert_close(t.full(), t.mlp[2](torch.tanh(t.mlp[0](t.embedding))))
    assert t.full().shape == (3, 2 * 2 * 32) and t.embedding.requires_grad
    ids = torch.randint(1, 99, (2, 5))
    before = model(ids).last_hidden
    t.freeze_table()
    assert t.mlp is None
    torch.testing.assert_close(model(ids).last_hidden, before)


@pytest.mark.parametrize("kind", ["scaled_dot", "additive", "dot", "relu", "linear", "sliding_window"])
def test_every_kernel_sees_the_prefix_first_with_padding(kind: str) -> None:
    """Through the module (projections, cache protocol, mask padding) against the bare kernel on concatenated keys."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(16, 2, kind=kind).eval()
    inner = mha.kernel
    table = PrefixTable(3, 1, 16)
    mha.kernel = PrefixKernel(inner, table, 0, 2)
    x = torch.randn(2, 5, 16)
    mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    mask[1, ..., 3:] = False
    q, k, v = (t.view(2, 5, 2, 8).transpose(1, 2) for t in mha.qkv_proj(x).split(16, dim=-1))  # (B, H, T, d_k)
    pk, pv = table.layer(0, 2, 2, x.dtype)  # (B, H, P, d_k)
    full_mask = torch.cat([torch.ones(2, 1, 1, 3, dtype=torch.bool), mask], dim=-1)
    ref = inner(q, torch.cat([pk, k], 2), torch.cat([pv, v], 2), mask=full_mask)
    expected = mha.out_proj(ref.transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(mha(x, mask=mask)[0], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["prefix", "lora"])
def test_activation_checkpointing_gives_the_same_adapter_gradients(method: str) -> None:
    from attnkit.peft import LoRAConfig, apply_lora
    from attnkit.training.distributed import apply_activation_checkpointing

    ids = torch.randint(1, 99, (2, 6))
    grads = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        model = BertModel(bert_preset("bert-test", dropout=0.0, attention={"dropout": 0.0}))
        if method == "prefix":
            apply_prefix(model, PrefixConfig(n_virtual=3, reparam=True, hidden=8))
        else:
            apply_lora(model, LoRAConfig(r=2))
            for p in model.parameters():
                if p.requires_grad and p.dim() == 2 and not p.any():
                    p.data.normal_()  # B = 0 would hide A's gradient
        if checkpointed:
            apply_activation_checkpointing(model)
        model.train()(ids).last_hidden.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-5, rtol=1e-4)


def test_prefix_input_and_deep_prompts_start_from_a_unit_normal() -> None:
    """P' (the MLP's input) and P-tuning v2's table are drawn from N(0, 1), as an embedding table is."""
    torch.manual_seed(0)
    reparam = PrefixTable(20, 2, 384, reparam=True, hidden=64)
    direct = PrefixTable(20, 2, 64)
    for t in (reparam.embedding, direct.table):
        assert abs(t.mean().item()) < 0.05 and abs(t.std().item() - 1.0) < 0.05
    reference = torch.nn.Embedding(20, 384).weight  # torch's embedding initialisation, the reference distribution
    assert abs(reparam.embedding.std().item() - reference.std().item()) < 0.05
    rows = reparam.full().detach()  # (P, width): the initial prefixes differ from one another, not P copies of the biases
    spread = (rows - rows.mean(0)).norm(dim=1).mean() / rows.norm(dim=1).mean()
    assert spread > 0.3


def test_prompt_tuning_starts_uniform_and_the_ptuning_encoder_input_unit_normal() -> None:
    """Prompt tuning's random init is uniform in [-0.5, 0.5] (Lester et al. 2021, 3.2); P-tuning's encoder input is N(0, 1)."""
    from attnkit.peft.prompt import PromptEncoder

    torch.manual_seed(0)
    prompt = PromptEncoder(20, 384).embedding
    assert prompt.abs().max() <= 0.5 and abs(prompt.std().item() - 1 / math.sqrt(12)) < 0.02
    for kind in ("lstm", "mlp"):
        x = PromptEncoder(20, 384, kind, 32).embedding
        assert abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1.0) < 0.05
