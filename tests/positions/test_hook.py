"""The positional hook in MultiHeadAttention and the models: against attention computed by hand (the bias by
its formula, rotary by Hugging Face's apply_rotary_pos_emb), cached and static-cache decoding against the full
forward, the T5 table shared by a stack, and the refused combinations."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from attnkit.attention import KVCache, MultiHeadAttention
from attnkit.errors import ConfigError
from attnkit.generation.sampling import decode_one_token, prefill, static_caches
from attnkit.models.gpt import GPT, gpt_preset
from attnkit.models.transformer import AttentionConfig
from attnkit.positions.alibi import alibi_slopes
from attnkit.positions.config import PositionConfig

KINDS = ["rotary", "alibi", "t5_bias", "relative_key", "relative_key_query", "xl_relative"]
D_MODEL, H, T = 32, 4, 9


def by_hand(m: MultiHeadAttention, x: torch.Tensor, bias: torch.Tensor | None, rotary: bool) -> torch.Tensor:
    b, t, _ = x.shape
    q, k, v = m.qkv_proj(x).view(b, t, 3, H, D_MODEL // H).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, d)
    if rotary:
        d = D_MODEL // H
        theta = 10000.0 ** (-torch.arange(0, d, 2).float() / d)
        ang = torch.arange(t).float()[:, None] * theta
        emb = torch.cat((ang, ang), -1)[None]  # (1, T, d): Hugging Face's cos/sin layout
        q, k = apply_rotary_pos_emb(q, k, emb.cos(), emb.sin())
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + (0 if bias is None else bias)
    s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    out = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, D_MODEL)
    return m.out_proj(out)


@pytest.mark.parametrize("kernel", ["scaled_dot", "sliding_window"])
def test_alibi_and_rotary_in_the_module_match_attention_by_hand(kernel: str) -> None:
    torch.manual_seed(0)
    params = {"window": 64} if kernel == "sliding_window" else {}  # a window wider than T: plain causal
    x = torch.randn(2, T, D_MODEL)
    m = MultiHeadAttention(D_MODEL, H, kind=kernel, kernel_params=params, position=PositionConfig(kind="alibi")).eval()
    i = torch.arange(T)
    bias = -alibi_slopes(H)[:, None, None] * (i[:, None] - i[None, :]).clamp(min=0)
    torch.testing.assert_close(m(x, causal=True)[0], by_hand(m, x, bias, rotary=False), atol=1e-5, rtol=0)
    m = MultiHeadAttention(D_MODEL, H, kind=kernel, kernel_params=params, position=PositionConfig(kind="rotary")).eval()
    torch.testing.assert_close(m(x, causal=True)[0], by_hand(m, x, None, rotary=True), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("kernel", ["scaled_dot", "sliding_window"])
def test_cached_decoding_and_weights_path_equal_the_full_forward(kind: str, kernel: str) -> None:
    torch.manual_seed(1)
    params = {"window": 4} if kernel == "sliding_window" else {}
    m = MultiHeadAttention(D_MODEL, H, kind=kernel, kernel_params=params, position=PositionConfig(kind=kind)).eval()
    x = torch.randn(2, T, D_MODEL)
    full, _ = m(x, causal=True)
    cache = KVCache(16)
    steps = [m(x[:, a:b], causal=True, cache=cache)[0] for a, b in ((0, 5), (5, 6), (6, T))]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(m(x, causal=True, need_weights=True)[0], full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_gpt_static_cache_decoding_of_left_padded_prompts(kind: str) -> None:
    torch.manual_seed(2)
    model = GPT(gpt_preset("gpt-tiny", attention=AttentionConfig(position=PositionConfig(kind=kind)))).eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    ids = torch.tensor([prompts[0], [0, 0] + prompts[1]])
    pad = torch.tensor([0, 2])
    with torch.no_grad():
        caches = static_caches(model, 2, 8)
        first = prefill(model, ids, pad, caches)
        nxt = decode_one_token(model, torch.tensor([[3], [4]]), torch.tensor([5]), pad, caches)
        for row, (p, tok) in enumerate(zip(prompts, (3, 4))):
            want = model(torch.tensor([p + [tok]])).logits[0]
            torch.testing.assert_close(first[row], want[-2], atol=1e-4, rtol=0)
            torch.testing.assert_close(nxt[row], want[-1], atol=1e-4, rtol=0)


def test_t5_table_is_one_per_stack() -> None:
    model = GPT(gpt_preset("gpt-tiny", attention=AttentionConfig(position=PositionConfig(kind="t5_bias"))))
    tables = {id(layer.self_attn.position.module.table.weight) for layer in model.decoder.layers}
    assert len(tables) == 1
    plain = GPT(gpt_preset("gpt-tiny", attention=AttentionConfig(position=PositionConfig(kind="alibi"))))
    assert model.num_parameters() == plain.num_parameters() + 32 * 4
    model(torch.randint(0, 96, (1, 6))).logits.sum().backward()
    assert model.decoder.layers[0].self_attn.position.module.table.weight.grad is not None


def test_positions_replace_the_learned_embeddings() -> None:
    assert GPT(gpt_preset("gpt-tiny", attention=AttentionConfig(position=PositionConfig(kind="alibi")))).positions is None


@pytest.mark.parametrize("kernel", ["linear", "performer", "linformer", "lsh"])
def test_a_bias_with_a_kernel_without_softmax_is_one_config_error(kernel: str) -> None:
    with pytest.raises(ConfigError, match=rf"position.kind='alibi'.*attention.kind='{kernel}'"):
        AttentionConfig(kind=kernel, position=PositionConfig(kind="alibi"))
    AttentionConfig(kind=kernel, position=PositionConfig(kind="rotary"))  # rotary is meaningful everywhere


def test_position_is_set_from_the_command_line_keys() -> None:
    c = gpt_preset("gpt-tiny").with_overrides(["attention.position.kind=xl_relative"])
    assert c.attention.position.kind == "xl_relative" and not c.learned_positions
    with pytest.raises(ConfigError, match="position.kind"):
        gpt_preset("gpt-tiny").with_overrides(["attention.position.kind=absolute"])


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["alibi", "t5_bias"])
@pytest.mark.parametrize("kernel", ["scaled_dot", "sliding_window"])
def test_flex_score_mod_equals_the_dense_bias_on_cuda(kind: str, kernel: str) -> None:
    torch.manual_seed(3)
    params = {"window": 128} if kernel == "sliding_window" else {}
    m = MultiHeadAttention(256, 4, kind=kernel, kernel_params=params, position=PositionConfig(kind=kind)).cuda()
    if kind == "t5_bias":
        torch.nn.init.normal_(m.position.module.table.weight)
    x = torch.randn(2, 256, 256, device="cuda", requires_grad=True)
    out = m(x, causal=True)[0]  # flex path (>= 128 queries, no mask)
    ref = m(x, causal=True, need_weights=True)[0]  # the dense reference path
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=0)
    g1 = torch.autograd.grad(out.square().sum(), [x, *m.parameters()], allow_unused=True)
    g2 = torch.autograd.grad(ref.square().sum(), [x, *m.parameters()], allow_unused=True)
    for a, b in zip(g1, g2):
        if a is not None:
            torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_decoder_cached_decoding_equals_the_full_pass(kind: str) -> None:
    from attnkit.layers.positional import NoPositions
    from attnkit.models.transformer import Transformer, preset

    torch.manual_seed(4)
    model = Transformer(preset("transformer-tiny", attention=AttentionConfig(position=PositionConfig(kind=kind)))).eval()
    assert isinstance(model.src_embed.positions, NoPositions) and isinstance(model.tgt_embed.positions, NoPositions)
    src = torch.tensor([[5, 6, 7, 8, 2], [9, 10, 2, 0, 0]])
    tgt = torch.tensor([[1, 11, 12, 13], [1, 14, 15, 16]])
    with torch.no_grad():
        full = model(src, tgt).logits
        memory, _ = model.encode(src)
        caches = model.new_caches(8)
        steps = [model.decode(tgt[:, i : i + 1], memory, model.source_mask(src), caches=caches)[0] for i in range(4)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_rotary_with_linear_attention_decodes_as_an_rnn() -> None:
    torch.manual_seed(5)
    model = GPT(gpt_preset("gpt-tiny", attention=AttentionConfig(kind="linear", position=PositionConfig(kind="rotary")))).eval()
    ids = torch.randint(0, 96, (2, 10))
    with torch.no_grad():
        full = model(ids).logits
        states = model.new_caches()  # the fixed-size recurrent state; rotary positions from its length
        steps = [model(ids[:, a:b], caches=states).logits for a, b in ((0, 6), (6, 7), (7, 10))]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
