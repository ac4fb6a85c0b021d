"""Gated FFNs (Shazeer 2020, eq. 6) against the formula written out, and Hugging Face's LlamaMLP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.layers.ffn import FeedForward, GatedFeedForward, build_ffn


@pytest.mark.parametrize("act,ref", [("silu", lambda z: z * torch.sigmoid(z)), ("gelu", lambda z: F.gelu(z))])
@pytest.mark.parametrize("bias", [False, True])
def test_gated_ffn_is_the_papers_formula(act, ref, bias) -> None:
    torch.manual_seed(0)
    ffn = GatedFeedForward(8, 12, act, bias=bias).double()
    if bias:
        torch.nn.init.normal_(ffn.w1.bias)
    x = torch.randn(2, 3, 8, dtype=torch.float64)
    W, V = ffn.w1.weight[:12], ffn.w1.weight[12:]
    bW, bV = (ffn.w1.bias[:12], ffn.w1.bias[12:]) if bias else (0.0, 0.0)
    expected = (ref(x @ W.T + bW) * (x @ V.T + bV)) @ ffn.w2.weight.T + (ffn.w2.bias if bias else 0.0)
    torch.testing.assert_close(ffn(x), expected)


def test_swiglu_matches_hugging_face_llama_mlp() -> None:
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaMLP

    torch.manual_seed(0)
    theirs = LlamaMLP(LlamaConfig(hidden_size=8, intermediate_size=20, num_attention_heads=2, num_key_value_heads=2, hidden_act="silu")).double()
    mine = GatedFeedForward(8, 20, "silu").double()
    with torch.no_grad():
        mine.w1.weight.copy_(torch.cat([theirs.gate_proj.weight, theirs.up_proj.weight]))
        mine.w2.weight.copy_(theirs.down_proj.weight)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(mine(x), theirs(x))


def test_build_ffn() -> None:
    assert isinstance(build_ffn("mlp", 4, 8, "relu"), FeedForward)
    assert isinstance(build_ffn("gated", 4, 8, "silu"), GatedFeedForward)
    with pytest.raises(ValueError, match="ffn='glu'"):
        build_ffn("glu", 4, 8, "silu")
