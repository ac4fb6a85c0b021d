"""Hugging Face Llama, Mistral and Qwen2 import/export, checked against transformers' own models.

Tiny random models are built from the config classes (every weight random, biases and RMSNorm
gains included, so a swapped or missing tensor shows); attnkit loads the saved directory and must
give the same logits in float32: on a batch, on a left-padded batch with its attention mask, and
decoding step by step with a KV cache. Mistral's window is smaller than the sequence, so it matters.
"""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
)

import attnkit  # noqa: E402
from attnkit.cli.main import main  # noqa: E402
from attnkit.errors import CheckpointError  # noqa: E402
from attnkit.generation import SamplingConfig, generate  # noqa: E402
from attnkit.hub.llama import save_hf_llama  # noqa: E402
from attnkit.models.gpt import GPT  # noqa: E402

SIZES = dict(vocab_size=67, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rms_norm_eps=1e-6)
FAMILIES = {
    "llama": (LlamaForCausalLM, lambda: LlamaConfig(**SIZES, rope_theta=500.0)),
    "llama-mqa-tied": (LlamaForCausalLM, lambda: LlamaConfig(**{**SIZES, "num_key_value_heads": 1}, tie_word_embeddings=True)),
    "llama-bias": (LlamaForCausalLM, lambda: LlamaConfig(**{**SIZES, "num_key_value_heads": 4}, attention_bias=True, mlp_bias=True)),
    "mistral": (MistralForCausalLM, lambda: MistralConfig(**SIZES, sliding_window=5)),
    "qwen2": (Qwen2ForCausalLM, lambda: Qwen2Config(**SIZES, tie_word_embeddings=False)),
}
TOL = dict(atol=1e-5, rtol=1e-5)


def hf_model(tmp_path, family: str, seed: int = 0):
    cls, make = FAMILIES[family]
    torch.manual_seed(seed)
    config = make()
    config._attn_implementation = "eager"
    model = cls(config).eval()
    with torch.no_grad():  # biases and norm gains away from their initial zeros and ones
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    path = tmp_path / family
    model.save_pretrained(path)
    return model, path


def batch(b: int = 3, t: int = 12, vocab: int = 67) -> torch.Tensor:
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_padded_batch_and_cached_decoding_match_transformers(tmp_path, family):
    hf, path = hf_model(tmp_path, family)
    ours = attnkit.load(path).eval()
    assert isinstance(ours, GPT) and ours.config.kv_heads == hf.config.num_key_value_heads
    ids = batch()
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[2, :6] = 0
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, **TOL)
        got, ref = ours(ids, attention_mask=mask).logits, hf(ids, attention_mask=mask).logits
        keep = mask.bool()
        torch.testing.assert_close(got[keep], ref[keep], **TOL)  # pad positions' outputs are meaningless
        right = mask.flip(1)  # right padding
        torch.testing.assert_close(ours(ids, attention_mask=right).logits[right.bool()], hf(ids, attention_mask=right).logits[right.bool()], **TOL)
        # step by step through the growing KV cache: a 4-token prefill, then one token at a time
        caches = ours.new_caches(ids.shape[1])
        steps = [ours(ids[:, :4], attention_mask=mask[:, :4], caches=caches).logits]
        for i in range(4, ids.shape[1]):
            steps.append(ours(ids[:, i : i + 1], attention_mask=mask[:, : i + 1], caches=caches).logits)
        assert caches[0].k.shape[1] == hf.config.num_key_value_heads
        torch.testing.assert_close(torch.cat(steps, 1)[keep], ref[keep], **TOL)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_loads_in_transformers_with_the_same_weights(tmp_path, family):
    hf, path = hf_model(tmp_path, family)
    ours = attnkit.load(path)
    out = save_hf_llama(ours, tmp_path / "out")
    data = json.loads((out / "config.json").read_text())
    assert data["model_type"] == family.split("-")[0]
    back = type(hf).from_pretrained(out).eval()
    theirs, again = hf.state_dict(), back.state_dict()
    assert set(theirs) == set(again)
    assert all(torch.equal(theirs[k], again[k]) for k in theirs)
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, **TOL)


def test_convert_cli_round_trip(tmp_path):
    hf, path = hf_model(tmp_path, "qwen2")
    assert main(["convert", "--to-attnkit", str(path), str(tmp_path / "ak")]) == 0
    assert main(["convert", "--to-hf", str(tmp_path / "ak"), str(tmp_path / "hf2")]) == 0
    back = Qwen2ForCausalLM.from_pretrained(tmp_path / "hf2").eval()
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, **TOL)


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_greedy_generation_equals_transformers_generate(tmp_path, family):
    hf, path = hf_model(tmp_path, family, seed=3)
    ours = attnkit.load(path).eval()
    prompts = [[5, 9, 2, 33, 7, 1, 8], [11, 4, 60]]
    got = generate(ours, prompts, SamplingConfig(max_new_tokens=10, temperature=0)).tokens
    ids = torch.zeros(2, 7, dtype=torch.long)
    mask = torch.zeros(2, 7, dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, 7 - len(p) :], mask[r, 7 - len(p) :] = torch.tensor(p), 1
    hf.generation_config.pad_token_id = 0
    ref = hf.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=None)[:, 7:]
    assert got == ref.tolist()


def test_unsupported_variants_are_refused_by_name(tmp_path):
    _, path = hf_model(tmp_path, "llama")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0}}))
    with pytest.raises(CheckpointError, match="rope_type='yarn'"):
        attnkit.load(path)
    (path / "config.json").write_text(json.dumps({**cfg, "head_dim": 16}))
    with pytest.raises(CheckpointError, match="head_dim=16"):
        attnkit.load(path)
    (path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match="no weights for 'decoder.layers.2"):
        attnkit.load(path)


def test_sharded_checkpoint_loads(tmp_path):
    hf, _ = hf_model(tmp_path, "llama")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="40KB")
    shards = sorted((tmp_path / "sharded").glob("model-*.safetensors"))
    assert len(shards) > 1 and not (tmp_path / "sharded" / "model.safetensors").exists()
    ours = attnkit.load(tmp_path / "sharded").eval()
    ids = batch()
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, **TOL)
    index = tmp_path / "sharded" / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    index.write_text(json.dumps({**data, "weight_map": {**data["weight_map"], "model.extra.weight": shards[0].name}}))
    with pytest.raises(CheckpointError, match="'model.extra.weight' should be in"):
        attnkit.load(tmp_path / "sharded")
    index.write_text(json.dumps(data))
    shards[-1].unlink()
    with pytest.raises(CheckpointError, match=f"{shards[-1].name} does not exist"):
        attnkit.load(tmp_path / "sharded")
