"""``scaled_dot``'s ``backend`` option: SDPA's kernel pinned on CUDA, the same numbers as SDPA's own choice."""

import pytest
import torch
import torch.nn.functional as F

import attnkit
from attnkit.attention import get
from attnkit.errors import ConfigError


def test_unknown_backend_is_one_line():
    with pytest.raises(ConfigError, match="attention kind 'scaled_dot': backend='fast' is not one of efficient, flash, cudnn, math"):
        get("scaled_dot", backend="fast")


def test_cpu_ignores_the_pin():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 6, 8) for _ in range(3))
    pinned, free = get("scaled_dot", backend="efficient"), get("scaled_dot")
    torch.testing.assert_close(pinned(q, k, v, causal=True), F.scaled_dot_product_attention(q, k, v, is_causal=True))
    torch.testing.assert_close(pinned(q, k, v), free(q, k, v))


def test_reaches_the_kernel_from_a_model_config():
    cfg = attnkit.TransformerConfig(
        src_vocab_size=20, tgt_vocab_size=20, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=1, n_decoder_layers=1,
        attention=attnkit.models.transformer.AttentionConfig(params={"backend": "efficient"}),
    )
    model = attnkit.Transformer(cfg)
    assert model.encoder.layers[0].self_attn.kernel.backend == "efficient"
    assert model.decoder.layers[0].cross_attn.kernel.backend == "efficient"


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["efficient", "flash", "math"])
def test_pinned_backend_matches_the_default_on_cuda(backend):
    torch.manual_seed(0)
    q, k, v = (torch.randn(4, 2, 30, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    pinned = get("scaled_dot", backend=backend)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    torch.testing.assert_close(pinned(q, k, v, causal=True).float(), ref, rtol=2e-2, atol=2e-2)
    if backend != "flash":  # flash takes no mask
        bias = torch.zeros(4, 1, 1, 30, device="cuda", dtype=torch.bfloat16)
        bias[:, ..., 20:] = float("-inf")
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=bias.float())
        torch.testing.assert_close(pinned(q, k, v, bias=bias).float(), ref, rtol=2e-2, atol=2e-2)
