"""Hugging Face GPT-2 import/export, checked against transformers.GPT2LMHeadModel itself."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers")
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import attnkit  # noqa: E402
from attnkit.errors import CheckpointError  # noqa: E402
from attnkit.hub import save_hf_gpt2  # noqa: E402
from attnkit.models.gpt import GPT, positions_from_mask  # noqa: E402

SETTINGS = {
    "small": dict(n_layer=2, n_head=4, n_embd=32),
    "inner-relu": dict(n_layer=1, n_head=2, n_embd=24, n_inner=40, activation_function="relu"),
    "gelu-eps": dict(n_layer=3, n_head=3, n_embd=24, activation_function="gelu", layer_norm_epsilon=1e-6),
    "pytorch-tanh": dict(n_layer=2, n_head=1, n_embd=16, activation_function="gelu_pytorch_tanh"),
}


def hf_model(tmp_path, seed: int = 0, **kw) -> tuple[GPT2LMHeadModel, str]:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=61, n_positions=40, bos_token_id=0, eos_token_id=0, **kw)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # random LayerNorm affine parameters too, so that a swapped ln_1/ln_2 shows
        for name, p in model.named_parameters():
            if "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / "hf"
    model.save_pretrained(path)
    return model, str(path)


def left_padded(batch: int = 3, t: int = 17, vocab: int = 61) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (batch, t), generator=g)
    mask = torch.ones(batch, t, dtype=torch.long)
    for row in range(1, batch):
        mask[row, : 3 * row] = 0  # row r has 3r pad tokens on the left
    return ids, mask


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_logits_match_transformers(tmp_path, setting):
    hf, path = hf_model(tmp_path, **SETTINGS[setting])
    ours = attnkit.load(path).eval()
    assert isinstance(ours, GPT)
    ids, mask = left_padded()
    with torch.no_grad():
        full_ref = hf(ids).logits
        full = ours(ids).logits
        ref = hf(ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
        got = ours(ids, attention_mask=mask).logits
    torch.testing.assert_close(full, full_ref, atol=1e-4, rtol=0)
    real = mask.bool()
    torch.testing.assert_close(got[real], ref[real], atol=1e-4, rtol=0)


def test_round_trip_to_hf(tmp_path):
    hf, path = hf_model(tmp_path, **SETTINGS["small"])
    ours = attnkit.load(path).eval()
    out = save_hf_gpt2(ours, tmp_path / "exported")
    back = GPT2LMHeadModel.from_pretrained(out).eval()
    again = attnkit.load(out).eval()
    ids, mask = left_padded()
    pos = positions_from_mask(mask)
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=pos).logits
        real = mask.bool()
        torch.testing.assert_close(back(ids, attention_mask=mask, position_ids=pos).logits[real], ref[real], atol=1e-4, rtol=0)
        torch.testing.assert_close(again(ids, attention_mask=mask).logits[real], ref[real], atol=1e-4, rtol=0)


def test_attnkit_model_exports_and_matches(tmp_path):
    torch.manual_seed(0)
    ours = GPT(attnkit.gpt_preset("gpt-tiny")).eval()
    back = GPT2LMHeadModel.from_pretrained(save_hf_gpt2(ours, tmp_path / "x")).eval()
    ids = torch.randint(0, ours.config.vocab_size, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ours(ids).logits, atol=1e-4, rtol=0)


def test_legacy_keys_without_prefix_and_mask_buffers(tmp_path):
    hf, path = hf_model(tmp_path, **SETTINGS["small"])
    state = load_file(f"{path}/model.safetensors")
    legacy = {k.removeprefix("transformer."): v for k, v in state.items()}
    legacy["h.0.attn.bias"] = torch.ones(1, 1, 40, 40)  # causal-mask buffer of old conversions
    legacy["lm_head.weight"] = legacy["wte.weight"].clone()
    save_file(legacy, f"{path}/model.safetensors")
    ours = attnkit.load(path).eval()
    ids = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("transformer.h.1.mlp.c_fc.bias"), "decoder.layers.1.ffn.w1.bias' (from 'transformer.h.1.mlp.c_fc.bias')"),
        (lambda s: s.__setitem__("transformer.h.0.attn.q_proj.weight", torch.zeros(2)), "transformer.h.0.attn.q_proj.weight"),
        (lambda s: s.__setitem__("transformer.h.0.attn.c_proj.weight", torch.zeros(32, 31)),
         "'transformer.h.0.attn.c_proj.weight' gives decoder.layers.0.self_attn.out_proj.weight the shape (31, 32)"),
        (lambda s: s.__setitem__("transformer.h.2.ln_1.weight", torch.zeros(32)), "'transformer.h.2.ln_1.weight' maps to 'decoder.layers.2"),
        (lambda s: s.__setitem__("lm_head.weight", torch.zeros(61, 32)), "lm_head.weight"),
    ],
    ids=["missing", "unknown", "shape", "extra-layer", "untied-head"],
)
def test_strict_import_names_the_key(tmp_path, edit, message, edit_weights):
    _, path = hf_model(tmp_path, **SETTINGS["small"])
    edit_weights(path, edit)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        attnkit.load(path)


def test_unsupported_config_is_named(tmp_path):
    _, path = hf_model(tmp_path, **SETTINGS["small"], scale_attn_by_inverse_layer_idx=True)
    with pytest.raises(CheckpointError, match="scale_attn_by_inverse_layer_idx"):
        attnkit.load(path)


def test_export_refuses_what_gpt2_cannot_express(tmp_path):
    model = GPT(attnkit.gpt_preset("gpt-tiny", activation="gelu_sigmoid"))
    with pytest.raises(attnkit.ConfigError, match="activation"):
        save_hf_gpt2(model, tmp_path / "x")
    cfg = json.loads(json.dumps(attnkit.hub.config_to_hf(attnkit.gpt_preset("gpt-tiny"))))
    assert cfg["model_type"] == "gpt2" and cfg["n_embd"] == 64
