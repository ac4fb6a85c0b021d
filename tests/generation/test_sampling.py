"""Sampling from GPT over the static KV cache: cached == uncached, filters, seeds, stops."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from attnkit.generation.sampling import (
    SamplingConfig, choose, cut_at_stop, decode_one_token, filter_logits, generate, prefill, static_caches,
)
from attnkit.models.gpt import GPT, gpt_preset

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18]]


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(gpt_preset("gpt-tiny")).eval()


def left_pad(prompts):
    longest = max(map(len, prompts))
    ids = torch.zeros(len(prompts), longest, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :] = torch.tensor(p)
    return ids, torch.tensor([longest - len(p) for p in prompts])


def uncached_greedy(model, prompts, n):
    """Reference: the full forward pass over the whole sequence at every step, no cache."""
    ids, pad = left_pad(prompts)
    mask = (torch.arange(ids.shape[1])[None] >= pad[:, None]).long()
    steps = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(ids, attention_mask=mask).logits[:, -1]
            steps.append(logits)
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return torch.stack(steps, 1), ids


def test_static_cache_matches_uncached_and_compiles_once(model):
    n = 12
    ref, _ = uncached_greedy(model, PROMPTS, n)
    ids, pad = left_pad(PROMPTS)
    caches = static_caches(model, len(PROMPTS), ids.shape[1] + n)
    counter = CompileCounter()
    step = torch.compile(decode_one_token, backend=counter, fullgraph=True)
    with torch.no_grad():
        got = [prefill(model, ids, pad, caches)]
        for s in range(n - 1):
            token = got[-1].argmax(-1, keepdim=True)
            got.append(step(model, token, torch.tensor([ids.shape[1] + s]), pad, caches))
    torch.testing.assert_close(torch.stack(got, 1), ref, atol=1e-5, rtol=0)
    assert counter.frame_count == 1  # one graph for every step: no data-dependent shapes


def test_generate_greedy_equals_uncached_argmax(model):
    _, seqs = uncached_greedy(model, PROMPTS, 10)
    out = generate(model, PROMPTS, SamplingConfig(max_new_tokens=10, temperature=0))
    assert out.tokens == seqs[:, -10:].tolist()
    single = generate(model, [PROMPTS[1]], SamplingConfig(max_new_tokens=10, temperature=0))
    assert single.tokens[0] == out.tokens[1]  # left padding does not change a row's continuation


def test_seed_reproducible_and_top_k_1_is_greedy(model):
    cfg = SamplingConfig(max_new_tokens=15, temperature=1.0, seed=3)
    assert generate(model, PROMPTS, cfg).tokens == generate(model, PROMPTS, cfg).tokens
    other = generate(model, PROMPTS, SamplingConfig(max_new_tokens=15, temperature=1.0, seed=4)).tokens
    assert other != generate(model, PROMPTS, cfg).tokens
    greedy = generate(model, PROMPTS, SamplingConfig(max_new_tokens=8, temperature=0)).tokens
    assert generate(model, PROMPTS, SamplingConfig(max_new_tokens=8, temperature=0.7, top_k=1, seed=0)).tokens == greedy


def test_filters_against_hand_computed_sets():
    probs = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]])
    logits = probs.log()
    keep = lambda x: torch.isfinite(x)[0].tolist()  # noqa: E731
    assert keep(filter_logits(logits, top_p=0.5)) == [True, False, False, False, False]
    assert keep(filter_logits(logits, top_p=0.6)) == [True, True, False, False, False]
    assert keep(filter_logits(logits, top_p=0.85)) == [True, True, True, False, False]
    assert keep(filter_logits(logits, top_p=1.0)) == [True] * 5
    assert keep(filter_logits(logits, top_k=2)) == [True, True, False, False, False]
    shuffled = logits[:, [3, 0, 4, 2, 1]]
    assert keep(filter_logits(shuffled, top_p=0.6)) == [False, True, False, False, True]
    g = torch.Generator().manual_seed(0)
    draws = {int(choose(shuffled, 1.0, None, 0.6, g)) for _ in range(200)}
    assert draws == {1, 4}


def test_eos_and_stop_strings(model):
    greedy = generate(model, [PROMPTS[0]], SamplingConfig(max_new_tokens=10, temperature=0)).tokens[0]
    eos = greedy[4]
    cut = generate(model, [PROMPTS[0]], SamplingConfig(max_new_tokens=10, temperature=0, eos_id=eos)).tokens[0]
    assert cut == greedy[: greedy.index(eos)]
    decode = lambda ids: "".join(chr(65 + i % 26) for i in ids)  # noqa: E731
    stop = decode(greedy[3:5])
    out = generate(model, [PROMPTS[0]], SamplingConfig(max_new_tokens=10, temperature=0, stop=(stop,)), decode=decode)
    assert out.texts == [decode(greedy)[: decode(greedy).find(stop)]]
    assert cut_at_stop("abcXYdef", ("XY", "de")) == "abc"


def test_limits_and_bad_values(model):
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=1.5)
    with pytest.raises(ValueError, match="longer than the model's context of 64"):
        generate(model, [[1] * 65])
    out = generate(model, [[1] * 60], SamplingConfig(max_new_tokens=50, temperature=0))
    assert len(out.tokens[0]) == 4  # stops when the context is full
    streamed = []
    generate(model, PROMPTS, SamplingConfig(max_new_tokens=5, temperature=0), on_token=lambda s, t: streamed.append(t.tolist()))
    assert len(streamed) == 5 and len(streamed[0]) == 3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_decode_matches_eager():
    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny")).cuda().eval()
    cfg = SamplingConfig(max_new_tokens=20, temperature=0)
    eager = generate(model, PROMPTS, cfg).tokens
    for _ in range(2):  # the second call replays the captured graph
        assert generate(model, PROMPTS, cfg, compile=True).tokens == eager


def test_generate_under_autocast_runs_in_the_weights_dtype(model):
    cfg = SamplingConfig(max_new_tokens=6, temperature=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert generate(model, PROMPTS, cfg).tokens == generate(model, PROMPTS, cfg).tokens
