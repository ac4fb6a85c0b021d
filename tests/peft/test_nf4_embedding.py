"""The NF4 token embedding (QLoRA's ``quantize_embeddings``) against bitsandbytes and dense references."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from attnkit.errors import ConfigError
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.peft import LoRAConfig, PEFTConfig, apply_lora, load_adapted, merge, merge_and_unload, save_adapter, trainable_parameters
from attnkit.peft.files import ADAPTER_WEIGHTS
from attnkit.peft.nf4 import NF4Embedding, NF4Linear, NF4TiedLinear, dequantize_nf4, dequantize_nf4_rows, quantize_nf4

bnb = pytest.importorskip("bitsandbytes.functional")

QLORA = LoRAConfig(r=4, targets=("qkv", "w1"), quantize="nf4", quantize_embeddings=True)


def _table(v: int, d: int, dtype: torch.dtype, seed: int = 0) -> nn.Embedding:
    emb = nn.Embedding(v, d)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(v, d, generator=torch.Generator().manual_seed(seed)))
    return emb.to(dtype).requires_grad_(False)


@pytest.mark.parametrize("v,d,dtype", [(300, 128, torch.bfloat16), (101, 64, torch.bfloat16), (37, 192, torch.float32)])
def test_table_bytes_identical_to_bitsandbytes(v: int, d: int, dtype: torch.dtype) -> None:
    """Tables whose constants lie away from the midpoints where bitsandbytes's CPU kernel rounds to
    the farther code (test_nf4.py checks attnkit's nearest rounding of those)."""
    emb = _table(v, d, dtype)
    packed, state = bnb.quantize_4bit(emb.weight.detach(), quant_type="nf4", blocksize=64, compress_statistics=True)
    q = NF4Embedding(emb)
    assert torch.equal(q.packed, packed)  # the 4-bit indices, two per byte
    assert torch.equal(q.offset, state.offset) and torch.equal(q.absmax2, state.state2.absmax)
    assert torch.equal(q.absmax, state.absmax)  # the 8-bit second-level constants


def test_lookup_dequantizes_the_gathered_rows_exactly() -> None:
    emb = _table(300, 128, torch.bfloat16)
    q = NF4Embedding(emb)
    ids = torch.tensor([[0, 299, 5, 5], [150, 1, 298, 0]])  # repeats, first and last rows
    full = dequantize_nf4(quantize_nf4(emb.weight))  # (300, 128) bf16
    out = q(ids)
    assert out.shape == (2, 4, 128) and out.dtype == torch.bfloat16
    assert torch.equal(out, full[ids])
    assert torch.equal(dequantize_nf4_rows(q.quantized(), ids, torch.float32), dequantize_nf4(q.quantized(), torch.float32)[ids])
    # bitsandbytes's own dequantization of the same bytes, gathered
    packed, state = bnb.quantize_4bit(emb.weight.float(), quant_type="nf4", blocksize=64, compress_statistics=True)
    reference = bnb.dequantize_4bit(packed, state)[ids]
    torch.testing.assert_close(dequantize_nf4_rows(q.quantized(), ids, torch.float32), reference, atol=1e-6, rtol=0)


def test_tied_output_layer_computes_through_the_dequantized_table() -> None:
    q = NF4Embedding(_table(96, 64, torch.float32))
    bias = torch.randn(96)
    head = NF4TiedLinear(q, bias)
    x = torch.randn(3, 5, 64, generator=torch.Generator().manual_seed(3))
    w = q.dequantized(torch.float32)
    torch.testing.assert_close(head(x), x @ w.T + bias, atol=1e-6, rtol=0)
    assert dict(head.named_buffers()).keys() == {"bias"}  # the table is not copied into the head


def _gpt(d: int = 64) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=97, d_model=d, n_layers=2, n_heads=4, context=32))


def _randomise_b(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_model_equals_the_model_with_the_dequantized_table() -> None:
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    quantized = _gpt()
    torch.manual_seed(1)
    apply_lora(quantized, QLORA)
    reference = _gpt()  # the same weights, the table replaced by its dequantized copy (still tied)
    with torch.no_grad():
        reference.tok_embed.weight.copy_(quantized.tok_embed.dequantized(torch.float32))
    torch.manual_seed(1)
    apply_lora(reference, QLORA.replace(quantize_embeddings=False))
    assert isinstance(quantized.tok_embed, NF4Embedding) and isinstance(quantized.lm_head, NF4TiedLinear)
    assert reference.lm_head.weight is reference.tok_embed.weight and isinstance(reference.decoder.layers[0].ffn.w2, NF4Linear)
    _randomise_b(quantized)
    _randomise_b(reference)
    torch.testing.assert_close(quantized(ids).logits, reference(ids).logits, atol=1e-6, rtol=0)
    assert trainable_parameters(quantized) == trainable_parameters(reference)  # the table counted once, frozen
    assert not any("tok_embed" in n or "lm_head" in n for n, _ in quantized.named_parameters())


def test_wrong_width_and_wrong_method_name_the_option() -> None:
    with pytest.raises(ConfigError, match=r"quantize_embeddings.*48 wide, not a multiple of the NF4 blocksize 64"):
        apply_lora(_gpt(48), QLORA)
    with pytest.raises(ConfigError, match="quantize_embeddings"):
        LoRAConfig(quantize_embeddings=True)  # without an NF4 base
    with pytest.raises(ConfigError, match="quantize_embeddings"):
        PEFTConfig(method="lora", quantize_embeddings=True)
    assert PEFTConfig(method="qlora", quantize_embeddings=True).method_config().quantize_embeddings
    assert not PEFTConfig(method="qlora").method_config().quantize_embeddings  # off by default, as in the paper
    with pytest.raises(ConfigError, match="quantize_embeddings.*no token embedding"):
        apply_lora(nn.Sequential(nn.Linear(64, 64)), LoRAConfig(targets=("0",), quantize="nf4", quantize_embeddings=True))


def test_adapter_files_and_merging_leave_the_table_as_base_weight(tmp_path: Path) -> None:
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(2))
    _gpt().save_pretrained(tmp_path / "base")
    model = _gpt()
    apply_lora(model, QLORA)
    model.peft_method = ("qlora", QLORA)
    _randomise_b(model)
    model.eval()
    out = model(ids).logits
    save_adapter(model, tmp_path / "adapter", base=tmp_path / "base")
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "adapter" / ADAPTER_WEIGHTS)).keys()
    assert keys and all("lora_" in k for k in keys)  # the quantized table is not in the adapter
    loaded = load_adapted(tmp_path / "adapter")
    assert isinstance(loaded.tok_embed, NF4Embedding) and isinstance(loaded.lm_head, NF4TiedLinear)
    torch.testing.assert_close(loaded(ids).logits, out, atol=0, rtol=0)
    with pytest.raises(ConfigError, match="NF4 base"):
        merge(loaded)
    plain = merge_and_unload(loaded)
    assert isinstance(plain.tok_embed, nn.Embedding) and plain.lm_head.weight is plain.tok_embed.weight
    torch.testing.assert_close(plain(ids).logits, out, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_table_on_cuda_matches_bitsandbytes_and_compiles() -> None:
    """On the GPU bitsandbytes quantizes the constants too: every byte and the gathered rows agree;
    the compiled model equals the eager one."""
    emb = _table(1000, 256, torch.bfloat16).cuda()
    packed, state = bnb.quantize_4bit(emb.weight, quant_type="nf4", blocksize=64, compress_statistics=True)
    q = NF4Embedding(emb)
    assert torch.equal(q.packed, packed) and torch.equal(q.absmax, state.absmax)
    assert torch.equal(q.absmax2, state.state2.absmax) and torch.equal(q.offset, state.offset)
    ids = torch.randint(0, 1000, (4, 16), device="cuda")
    assert torch.equal(q(ids), bnb.dequantize_4bit(packed, state)[ids])
    model = _gpt().cuda()
    apply_lora(model, QLORA)
    x = torch.randint(0, 97, (2, 9), device="cuda")
    torch.testing.assert_close(torch.compile(model)(x).logits, model(x).logits, atol=1e-4, rtol=1e-4)
