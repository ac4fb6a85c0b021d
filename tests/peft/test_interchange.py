"""attnkit adapters against peft on random-weight Hugging Face models: same weights, same outputs; files both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnkit.errors import CheckpointError
from attnkit.loading import load
from attnkit.peft import PEFTConfig, apply_peft, load_adapted, save_adapter
from attnkit.peft.lora import lora_layers

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
ATOL = 1e-5


def _randomise_lora(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    for layer in lora_layers(model).values():
        for p in layer.lora_B.values():
            p.data = torch.randn(p.shape, generator=g) * 0.2


def _hf_bert(d: str) -> torch.nn.Module:
    return transformers.BertForSequenceClassification.from_pretrained(d).eval()


def _point_at(adapter: Path, base: str) -> None:
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = base
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("dora", [False, True])
def test_lora_attnkit_to_peft_bert(hf_bert_dir: str, ids: torch.Tensor, tmp_path: Path, dora: bool) -> None:
    model = load(hf_bert_dir)
    apply_peft(model, PEFTConfig(method="lora", r=4, targets=("q", "v", "ffn.w1"), dora=dora, dropout=0.0))
    _randomise_lora(model)
    with torch.no_grad():
        model.out.weight.normal_()  # the head trained beside the adapter travels with it
    ours = model.eval()(ids).logits
    save_adapter(model, tmp_path, base=hf_bert_dir)
    theirs = peft.PeftModel.from_pretrained(_hf_bert(hf_bert_dir), str(tmp_path)).eval()
    assert (theirs(input_ids=ids).logits - ours).abs().max() < ATOL
    assert (load_adapted(tmp_path)(ids).logits - ours).abs().max() < ATOL


def test_lora_peft_to_attnkit_bert(hf_bert_dir: str, ids: torch.Tensor, tmp_path: Path) -> None:
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "dense"], task_type="SEQ_CLS", init_lora_weights=False)
    theirs = peft.get_peft_model(_hf_bert(hf_bert_dir), cfg).eval()
    theirs.save_pretrained(str(tmp_path))
    _point_at(tmp_path, hf_bert_dir)
    assert (load_adapted(tmp_path)(ids).logits - theirs(input_ids=ids).logits).abs().max() < ATOL


def test_lora_gpt2_c_attn_both_ways(hf_gpt2_dir: str, ids: torch.Tensor, tmp_path: Path) -> None:
    cfg = peft.LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM", init_lora_weights=False)
    theirs = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir), cfg).eval()
    ref = theirs(input_ids=ids).logits
    theirs.save_pretrained(str(tmp_path / "peft"))
    _point_at(tmp_path / "peft", hf_gpt2_dir)
    ours = load_adapted(tmp_path / "peft")
    assert (ours(ids).logits - ref).abs().max() < ATOL
    save_adapter(ours, tmp_path / "ak", base=hf_gpt2_dir)
    back = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir), str(tmp_path / "ak")).eval()
    assert (back(input_ids=ids).logits - ref).abs().max() < ATOL


def test_prefix_gpt2_matches_peft_with_and_without_cache(hf_gpt2_dir: str, ids: torch.Tensor, tmp_path: Path) -> None:
    theirs = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir),
                                 peft.PrefixTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM")).eval()
    ref = theirs(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    theirs.save_pretrained(str(tmp_path))
    _point_at(tmp_path, hf_gpt2_dir)
    ours = load_adapted(tmp_path)
    assert (ours(ids).logits - ref).abs().max() < ATOL
    caches = ours.new_caches(16)
    steps = [ours(ids[:, :4], caches=caches).logits, ours(ids[:, 4:5], caches=caches).logits, ours(ids[:, 5:], caches=caches).logits]
    assert (torch.cat(steps, 1) - ref).abs().max() < ATOL


@pytest.mark.parametrize("kind", ["prompt", "ptuning"])
def test_prompts_bert_match_peft(hf_bert_dir: str, ids: torch.Tensor, tmp_path: Path, kind: str) -> None:
    cfg = (peft.PromptTuningConfig(num_virtual_tokens=4, task_type="SEQ_CLS") if kind == "prompt"
           else peft.PromptEncoderConfig(num_virtual_tokens=4, encoder_hidden_size=16, task_type="SEQ_CLS"))
    theirs = peft.get_peft_model(_hf_bert(hf_bert_dir), cfg).eval()
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    ref = theirs(input_ids=ids, attention_mask=mask).logits
    theirs.save_pretrained(str(tmp_path))
    _point_at(tmp_path, hf_bert_dir)
    assert (load_adapted(tmp_path)(ids, attention_mask=mask).logits - ref).abs().max() < ATOL


def test_prompt_gpt2_matches_peft_on_real_tokens(hf_gpt2_dir: str, ids: torch.Tensor, tmp_path: Path) -> None:
    theirs = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir),
                                 peft.PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM")).eval()
    ref = theirs(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, 4:]
    theirs.save_pretrained(str(tmp_path))
    _point_at(tmp_path, hf_gpt2_dir)
    ours = load_adapted(tmp_path)
    assert (ours(ids).logits - ref).abs().max() < ATOL
    save_adapter(ours, tmp_path / "back", base=hf_gpt2_dir)
    again = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir), str(tmp_path / "back")).eval()
    assert (again(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, 4:] - ref).abs().max() < ATOL


def test_bad_adapter_files_are_one_line_errors(hf_bert_dir: str, hf_gpt2_dir: str, tmp_path: Path) -> None:
    model = load(hf_bert_dir)
    apply_peft(model, PEFTConfig(method="lora", r=4))
    save_adapter(model, tmp_path / "a", base=hf_bert_dir)
    from transformers import BertConfig, BertForSequenceClassification

    other = tmp_path / "other"
    BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                             intermediate_size=37, max_position_embeddings=64)).save_pretrained(other)
    with pytest.raises(CheckpointError, match="trained on a base with d_model=32") as e:
        load_adapted(tmp_path / "a", base=other)
    assert "\n" not in str(e.value)
    cfg = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    side = json.loads((tmp_path / "a" / "attnkit_adapter.json").read_text())
    side["config"]["r"] = 8
    (tmp_path / "a" / "attnkit_adapter.json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match=r"has shape \(4, 32\), the adapter expects \(8, 32\); adapter_config.json says r=8"):
        load_adapted(tmp_path / "a")
    assert cfg["peft_type"] == "LORA"


@pytest.mark.parametrize("dora", [False, True])
def test_gpt2_q_v_slices_export_to_peft_as_one_c_attn_adapter(hf_gpt2_dir: str, ids: torch.Tensor, tmp_path: Path, dora: bool) -> None:
    model = load(hf_gpt2_dir)
    apply_peft(model, PEFTConfig(method="lora", r=2, alpha=6, targets=("q", "v"), dora=dora, dropout=0.0))
    _randomise_lora(model)
    ours = model.eval()(ids).logits
    save_adapter(model, tmp_path, base=hf_gpt2_dir)
    theirs = peft.PeftModel.from_pretrained(transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_dir), str(tmp_path)).eval()
    assert (theirs(input_ids=ids).logits - ours).abs().max() < ATOL
    back = load_adapted(tmp_path)
    assert set(back.decoder.layers[0].self_attn.qkv_proj.lora_A) == {"q", "v"}  # read back as slices
    assert (back(ids).logits - ours).abs().max() < ATOL
