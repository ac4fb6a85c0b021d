"""NF4 and double quantization against bitsandbytes (CPU) and the paper's definitions; QLoRA layers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.errors import ConfigError
from attnkit.peft import LoRAConfig, apply_lora, merge, merge_and_unload
from attnkit.peft.nf4 import NF4Linear, dequantize_nf4, dynamic_code, nf4_code, nf4_quantiles, quantize_nf4

bnb = pytest.importorskip("bitsandbytes.functional")


def test_codes_match_their_definitions_and_bitsandbytes() -> None:
    torch.testing.assert_close(nf4_code(), nf4_quantiles().float(), atol=2e-7, rtol=0)  # normal quantiles, exact zero
    assert torch.equal(nf4_code(), bnb.get_4bit_type("nf4", device="cpu"))
    assert torch.equal(dynamic_code(), bnb.create_dynamic_map(signed=True))


@pytest.mark.parametrize("shape,dtype", [((96, 32), torch.float32), ((37, 33), torch.float32), ((256, 80), torch.bfloat16)])
def test_bytes_identical_to_bitsandbytes(shape: tuple[int, int], dtype: torch.dtype) -> None:
    w = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    packed, state = bnb.quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=True)
    q = quantize_nf4(w)
    assert torch.equal(q.packed, packed)  # the 4-bit indices, two per byte
    assert torch.equal(q.offset, state.offset) and torch.equal(q.absmax2, state.state2.absmax)
    assert torch.equal(q.absmax, state.absmax)  # the 8-bit second-level constants


def test_nested_constants_are_the_nearest_code() -> None:
    """bitsandbytes's CPU kernel rounds a few constants that lie near a midpoint to the farther
    neighbour; attnkit takes the nearest code value (the definition), checked by brute force."""
    w = torch.randn(600, 129, generator=torch.Generator().manual_seed(1))
    q = quantize_nf4(w)
    absmax = w.reshape(-1)[: (w.numel() // 64) * 64].view(-1, 64).abs().amax(1)
    absmax = torch.cat([absmax, w.reshape(-1)[(w.numel() // 64) * 64 :].abs().max()[None]])
    centred = absmax - absmax.mean()
    scale = q.absmax2.repeat_interleave(256)[: centred.numel()]
    nearest = ((centred / scale)[:, None] - dynamic_code()[None]).abs().argmin(1)
    assert torch.equal(q.absmax.long(), nearest)
    _, state = bnb.quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=True)
    assert (q.absmax.long() - state.absmax.long()).abs().max() <= 1  # at most one step apart


def test_dequantize_against_unpacked_bytes_and_bounds_error() -> None:
    w = torch.randn(64, 96, generator=torch.Generator().manual_seed(2))
    packed, state = bnb.quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=True)
    nibbles = torch.tensor([[b >> 4, b & 15] for b in packed.view(-1).tolist()]).view(-1)  # high nibble first
    constants = bnb.dequantize_blockwise(state.absmax, state.state2) + state.offset
    expected = (nf4_code()[nibbles] * constants.repeat_interleave(64)).view(64, 96)
    torch.testing.assert_close(dequantize_nf4(quantize_nf4(w)), expected, atol=1e-6, rtol=0)
    w32 = w.float()
    err = (dequantize_nf4(quantize_nf4(w32)) - w32).abs().view(-1, 64)
    gap = (nf4_code()[1:] - nf4_code()[:-1]).max() / 2
    assert (err <= gap * w32.abs().view(-1, 64).amax(1, keepdim=True) * 1.02 + 1e-6).all()


def test_nf4_linear_and_qlora() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 48)
    q = NF4Linear(lin)
    x = torch.randn(3, 64)
    torch.testing.assert_close(q(x), x @ q.dequantized(torch.float32).T + lin.bias)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    apply_lora(model, LoRAConfig(r=4, targets=("0",), quantize="nf4", modules_to_save=()))
    assert isinstance(model[0].base, NF4Linear) and isinstance(model[2], NF4Linear)
    with torch.no_grad():
        model[0].lora_B["all"].normal_()
    out = model(x)
    with pytest.raises(ConfigError, match="NF4 base"):
        merge(model)
    assert (merge_and_unload(model)(x) - out).abs().max() < 1e-5  # dequantized + merged in fp32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bytes_identical_to_bitsandbytes_cuda_and_compiled_dequantization() -> None:
    """On the GPU, bitsandbytes's kernel quantizes the constants too: every byte must agree; the
    compiled dequantize-and-matmul must equal the eager one."""
    w = torch.randn(1024, 768, generator=torch.Generator().manual_seed(0)).cuda().bfloat16()
    packed, state = bnb.quantize_4bit(w, quant_type="nf4", blocksize=64, compress_statistics=True)
    q = quantize_nf4(w)
    assert torch.equal(q.packed, packed) and torch.equal(q.absmax, state.absmax)
    assert torch.equal(q.absmax2, state.state2.absmax) and torch.equal(q.offset, state.offset)
    assert torch.equal(dequantize_nf4(q), bnb.dequantize_4bit(packed, state))
    layer = NF4Linear(nn.Linear(768, 1024).cuda())
    x = torch.randn(8, 768, device="cuda", dtype=torch.bfloat16)
    torch.testing.assert_close(torch.compile(layer)(x), layer(x), atol=1e-2, rtol=1e-2)
