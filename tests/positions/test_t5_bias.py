"""T5's bucketed relative bias against Hugging Face's T5Attention (_relative_position_bucket, compute_bias)
with random weights, bidirectional (encoder) and causal (decoder, with cached positions)."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5Attention

from attnkit.positions.t5_band import with_band_gradient
from attnkit.positions.t5_bias import T5RelativeBias, relative_position_bucket


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("n_buckets,max_distance", [(32, 128), (16, 40)])
def test_buckets_match_hf(bidirectional: bool, n_buckets: int, max_distance: int) -> None:
    rel = torch.arange(-600, 600)
    want = T5Attention._relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=n_buckets, max_distance=max_distance)
    got = relative_position_bucket(rel, bidirectional=bidirectional, n_buckets=n_buckets, max_distance=max_distance)
    assert torch.equal(got, want)


@pytest.mark.parametrize("path", ["dense", "distance"])
@pytest.mark.parametrize("decoder,past", [(False, 0), (True, 0), (True, 9)])
def test_bias_matches_hf_compute_bias(decoder: bool, past: int, path: str) -> None:
    torch.manual_seed(0)
    config = T5Config(d_model=32, d_kv=8, num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      is_decoder=decoder)
    theirs = T5Attention(config, has_relative_attention_bias=True)
    nn_w = torch.randn(32, 4)
    theirs.relative_attention_bias.weight.data.copy_(nn_w)
    mine = T5RelativeBias(4, 32, 128, train_path=path)  # type: ignore[arg-type]
    mine.table.weight.data.copy_(nn_w)
    tq, tk = (5, 5 + past) if decoder else (150, 150)
    want = theirs.compute_bias(tq, tk, past_seen_tokens=past)  # (1, H, Tq, Tk)
    q, k = torch.zeros(1, 4, tq, 8), torch.zeros(1, 4, tk, 8)
    got = mine.bias(q, k, torch.arange(past, past + tq), causal=decoder, scale=1.0, q_offset=past)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    got2 = mine.bias(q, k, torch.arange(past, past + tq)[None], causal=decoder, scale=1.0)  # per-row positions, no memo
    torch.testing.assert_close(got2, want, atol=0, rtol=0)


@pytest.mark.parametrize("path,key", [("dense", (0, 4, 4, False, "cpu")), ("distance", ("distance", 0, 4, 4, False, "cpu"))])
def test_bucket_ids_are_computed_once_per_shape(path: str, key: tuple) -> None:
    mine = T5RelativeBias(2, train_path=path)  # type: ignore[arg-type]
    q, k = torch.zeros(1, 2, 4, 8), torch.zeros(1, 2, 4, 8)
    mine.bias(q, k, torch.arange(4), causal=True, scale=1.0, q_offset=0)
    ids = mine._buckets[key]
    mine.bias(q, k, torch.arange(4), causal=True, scale=1.0, q_offset=0)
    assert mine._buckets[key] is ids and len(mine._buckets) == 1


def test_without_autograd_the_bias_is_computed_once_for_the_stack_and_follows_the_table() -> None:
    mine = T5RelativeBias(2)
    q, k = torch.zeros(1, 2, 4, 8), torch.zeros(1, 2, 4, 8)
    with torch.no_grad():
        a = mine.bias(q, k, torch.arange(4), causal=True, scale=1.0, q_offset=0)
        assert mine.bias(q, k, torch.arange(4), causal=True, scale=1.0, q_offset=0) is a  # the next layer reuses it
        mine.table.weight.add_(1.0)  # a changed table (an optimizer step) is looked up again
        torch.testing.assert_close(mine.bias(q, k, torch.arange(4), causal=True, scale=1.0, q_offset=0), a + 1.0)
    b = mine.bias(q, k, torch.arange(4), causal=True, scale=1.0, q_offset=0)
    assert b.requires_grad and b is not a  # under autograd: each layer's own lookup in the graph


@pytest.mark.parametrize("path", ["dense", "distance", "flex_band"])
def test_a_trained_table_leaves_flexattention_unless_a_flex_path(path: str) -> None:
    mod = T5RelativeBias(4, train_path=path)  # type: ignore[arg-type]
    assert mod.trains_in_flex() == path.startswith("flex")
    with torch.no_grad():
        assert mod.trains_in_flex()
    mod.table.weight.requires_grad_(False)
    assert mod.trains_in_flex()


def hf_attention(theirs: T5Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + HF's compute_bias, causal) v: the reference attention of a decoder."""
    tq, tk = q.shape[-2], k.shape[-2]
    bias = theirs.compute_bias(tq, tk, past_seen_tokens=past)  # (1, H, Tq, Tk)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias
    s = s.masked_fill(torch.arange(tk)[None, :] > torch.arange(past, past + tq)[:, None], -float("inf"))
    return s.softmax(-1) @ v


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("path", ["dense", "distance", "flex_band", "eval"])
@pytest.mark.parametrize("tq,past", [(300, 0), (4, 400)])
def test_every_path_matches_hf_decoder_attention_beyond_max_distance(path: str, tq: int, past: int) -> None:
    """Causal T5 attention over 300 and 404 keys (max_distance 128; attnkit's GPT test models train at 64 or
    fewer): the output, and for the training paths the table's gradient, against HF's compute_bias. The
    ``flex_*`` paths and evaluation run their FlexAttention ``score_mod`` in eager flex_attention."""
    flex_module = pytest.importorskip("torch.nn.attention.flex_attention")
    flex_attention, AuxRequest = flex_module.flex_attention, flex_module.AuxRequest
    torch.manual_seed(tq + past)
    h, d = 2, 8
    config = T5Config(d_model=16, d_kv=d, num_heads=h, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      is_decoder=True)
    theirs = T5Attention(config, has_relative_attention_bias=True)
    torch.nn.init.normal_(theirs.relative_attention_bias.weight)
    mine = T5RelativeBias(h, 32, 128, train_path="distance" if path == "eval" else path)  # type: ignore[arg-type]
    mine.table.weight.data.copy_(theirs.relative_attention_bias.weight.data)
    tk = past + tq
    q, k, v = torch.randn(1, h, tq, d), torch.randn(1, h, tk, d), torch.randn(1, h, tk, d)
    want = hf_attention(theirs, q, k, v, past)
    (g_want,) = torch.autograd.grad(want.square().sum(), theirs.relative_attention_bias.weight)
    with torch.set_grad_enabled(path != "eval"):
        assert mine.trains_in_flex() == (path in ("flex_band", "eval"))
        inner = mine.flex_score_mod(past, tq, tk, causal=True) if mine.trains_in_flex() else None
        if path == "flex_band" and past:
            assert inner is None  # queries after a cache: the bias goes to the kernel (as ``distance``)
        if inner is not None:

            def causal_mod(s, b, hh, qi, ki):  # type: ignore[no-untyped-def]  # the block mask's causal rule
                return torch.where(ki <= qi + past, inner(s, b, hh, qi, ki), -float("inf"))

            band = getattr(inner, "band_values", None)
            if band is None:
                got = flex_attention(q, k, v, score_mod=causal_mod)
            else:  # the kernel reads the band without autograd; its gradient joins after the kernel
                got, aux = flex_attention(q, k, v, score_mod=causal_mod, return_aux=AuxRequest(lse=True))
                got = with_band_gradient(got, aux.lse, band, q, k, v, 1 / math.sqrt(d))
        else:
            bias = mine.bias(q, k, torch.arange(past, tk), causal=True, scale=1 / math.sqrt(d), q_offset=past)
            s = q @ k.transpose(-1, -2) / math.sqrt(d) + bias
            got = s.masked_fill(torch.arange(tk)[None, :] > torch.arange(past, tk)[:, None], -float("inf")).softmax(-1) @ v
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    if path != "eval":
        (g_got,) = torch.autograd.grad(got.square().sum(), mine.table.weight)
        torch.testing.assert_close(g_got, g_want, atol=1e-4, rtol=1e-4)
        assert g_want[20:].abs().sum() > 0  # the far buckets (distance 128 and beyond: bucket 31) are reached


@pytest.mark.parametrize("lr_scale", [1.0, 30.0])
def test_the_table_is_not_weight_decayed_and_trains_at_its_own_learning_rate(lr_scale: float) -> None:
    """AdamW over a GPT with a T5 table: the table alone in a group without decay, at ``lr * t5_lr_scale``; one step
    moves it by that learning rate (Adam's first step is lr times the gradient's sign), the decayed weights not."""
    from attnkit.models.gpt import GPT, gpt_preset
    from attnkit.models.transformer import AttentionConfig
    from attnkit.positions.config import PositionConfig
    from attnkit.training.optim import build_optimizer

    torch.manual_seed(0)
    position = PositionConfig(kind="t5_bias", n_buckets=8, max_distance=12, t5_lr_scale=lr_scale)
    model = GPT(gpt_preset("gpt-tiny", d_model=32, attention=AttentionConfig(position=position)))
    table = model.decoder.layers[0].self_attn.position.module.table.weight
    opt = build_optimizer(model, "adamw", 1e-3, weight_decay=0.5)
    (group,) = [g for g in opt.param_groups if any(p is table for p in g["params"])]
    assert group["weight_decay"] == 0.0
    if lr_scale != 1.0:
        assert len(group["params"]) == 1  # its own group
    assert group["lr"] == pytest.approx(1e-3 * lr_scale)
    decayed = [p for g in opt.param_groups if g["weight_decay"] == 0.5 for p in g["params"]]
    assert decayed and all(p.ndim >= 2 for p in decayed) and not any(p is table for p in decayed)
    before = table.detach().clone()
    ids = torch.randint(0, 96, (2, 20))
    torch.nn.functional.cross_entropy(model(ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    grad = table.grad.clone()
    opt.step()
    moved = grad != 0
    torch.testing.assert_close((before - table.detach())[moved], 1e-3 * lr_scale * grad.sign()[moved], rtol=1e-3, atol=1e-7)
