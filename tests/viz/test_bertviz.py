"""bertviz interchange: attnkit.inspect's output goes into bertviz's head and model views unmodified."""

from __future__ import annotations

import json

import pytest
import torch

from attnkit.inspect import attentions
from attnkit.models import GPT, Transformer, gpt_preset, preset

bertviz = pytest.importorskip("bertviz", reason="bertviz is not installed (pip install bertviz)")


def _params(html: str) -> dict:
    """The ``params = {...};`` object bertviz writes into its page."""
    start = html.index("params = ") + len("params = ")
    obj, _ = json.JSONDecoder().raw_decode(html[start:])
    return obj


def test_gpt_attentions_render_in_head_and_model_view() -> None:
    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny"))
    tokens = ["The", "cat", "sat", "down"]
    att = attentions(model, torch.tensor([[5, 6, 7, 8]]))["self"]
    head = bertviz.head_view(att, tokens, html_action="return").data
    shown = _params(head)["attention"][0]
    assert shown["left_text"] == tokens
    torch.testing.assert_close(torch.tensor(shown["attn"]), torch.stack([w[0] for w in att]), rtol=0, atol=1e-6)
    model_page = bertviz.model_view(att, tokens, html_action="return").data
    assert "cat" in model_page


def test_encoder_decoder_attentions_render_in_head_view() -> None:
    torch.manual_seed(0)
    model = Transformer(preset("transformer-tiny"))
    att = attentions(model, torch.tensor([[5, 6, 7]]), torch.tensor([[1, 9]]))
    page = bertviz.head_view(encoder_attention=att["encoder"], decoder_attention=att["decoder"], cross_attention=att["cross"],
                             encoder_tokens=["x", "y", "z"], decoder_tokens=["<s>", "w"], html_action="return").data
    names = [a["name"] for a in _params(page)["attention"]]
    assert names == ["Encoder", "Decoder", "Cross"]
