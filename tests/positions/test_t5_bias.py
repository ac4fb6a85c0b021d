"""T5's bucketed relative bias against Hugging Face's T5Attention (_relative_position_bucket, compute_bias)
with random weights, bidirectional (encoder) and causal (decoder, with cached positions)."""

from __future__ import annotations

import pytest
import torch
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5Attention

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


@pytest.mark.parametrize("path", ["dense", "distance", "flex_distance"])
def test_a_trained_table_leaves_flexattention_unless_flex_distance(path: str) -> None:
    mod = T5RelativeBias(4, train_path=path)  # type: ignore[arg-type]
    assert mod.trains_in_flex() == (path == "flex_distance")
    with torch.no_grad():
        assert mod.trains_in_flex()
    mod.table.weight.requires_grad_(False)
    assert mod.trains_in_flex()
