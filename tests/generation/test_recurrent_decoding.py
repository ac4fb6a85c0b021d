"""Linear-attention GPTs decode as RNNs (Katharopoulos et al. 2020, section 3.4): a fixed-size
state per layer gives the tokens of recomputing the whole sequence at every step."""

from __future__ import annotations

import pytest
import torch

from attnkit.attention import MultiHeadAttention
from attnkit.attention.linear import RecurrentCache
from attnkit.generation import SamplingConfig, generate
from attnkit.models.gpt import GPT, gpt_preset
from attnkit.models.transformer import AttentionConfig


def recompute_greedy(model: GPT, prompts: list[list[int]], n: int) -> list[list[int]]:
    """Greedy decoding without any cache: the whole left-padded sequence runs at every step."""
    out = []
    for p in prompts:
        ids = list(p)
        for _ in range(n):
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0, -1]
            ids.append(int(logits.argmax()))
        out.append(ids[len(p):])
    return out


@pytest.mark.parametrize("kind", ["linear", "performer"])
def test_recurrent_generation_equals_recomputation(kind):
    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny", attention=AttentionConfig(kind=kind))).eval()
    assert model.recurrent and isinstance(model.new_caches()[0], RecurrentCache)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]  # left-padded to one batch by generate
    got = generate(model, prompts, SamplingConfig(max_new_tokens=8, temperature=0)).tokens
    assert got == recompute_greedy(model, prompts, 8)


def test_state_size_does_not_grow():
    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny", attention=AttentionConfig(kind="linear"))).eval()
    caches = model.new_caches()
    with torch.no_grad():
        model(torch.randint(3, 50, (2, 6)), caches=caches)
        sizes = [c.nbytes() for c in caches]
        for i in range(20):
            model(torch.randint(3, 50, (2, 1)), caches=caches)
    assert [c.nbytes() for c in caches] == sizes and sizes[0] > 0
    assert caches[0].length == 26


def test_recurrent_cache_is_refused_where_it_has_no_meaning():
    attn = MultiHeadAttention(16, 2, kind="scaled_dot")
    with pytest.raises(ValueError, match="RecurrentCache"):
        attn(torch.randn(1, 3, 16), causal=True, cache=RecurrentCache())
    lin = MultiHeadAttention(16, 2, kind="linear")
    with pytest.raises(ValueError, match="RecurrentCache"):
        lin(torch.randn(1, 3, 16), causal=False, cache=RecurrentCache())
