"""The compiled decode path of ``generate``: fixed cache buffers (no recompilation per call), no per-token host sync."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from attnkit.generation import sampling
from attnkit.generation.sampling import SamplingConfig, decode_greedy_token, generate
from attnkit.models.gpt import GPT, gpt_preset

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18]]


@pytest.fixture()
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(gpt_preset("gpt-tiny")).eval()


def test_compiled_generate_reuses_buffers_and_compiles_once(model, monkeypatch):
    counter = CompileCounter()
    torch._dynamo.reset()
    # temperature 0: generate() uses the greedy step (the argmax inside the compiled graph)
    # 11 tokens after the first: one compiled block of 8 steps (decode_greedy_block), then 3 single steps
    monkeypatch.setattr(sampling, "_COMPILED", {
        "reduce-overhead/greedy": torch.compile(decode_greedy_token, backend=counter, fullgraph=True),
        "reduce-overhead/block": torch.compile(sampling.decode_greedy_block, backend=counter, fullgraph=True),
    })
    monkeypatch.setattr(sampling, "_REUSED", {})
    cfg = SamplingConfig(max_new_tokens=12, temperature=0)
    eager = generate(model, PROMPTS, cfg).tokens
    for _ in range(3):  # the same buffers each call: the address guards hold, no recompilation
        assert generate(model, PROMPTS, cfg, compile=True).tokens == eager
    assert counter.frame_count == 2  # the block and the single step, each compiled once
    torch._dynamo.reset()


def test_queued_tokens_equal_per_step_tokens(model):
    """Without EOS/stop/callback the tokens stay on the device until the end; the result is the same."""
    cfg = SamplingConfig(max_new_tokens=12, temperature=0.9, top_k=20, seed=1)
    queued = generate(model, PROMPTS, cfg).tokens
    seen = []
    streamed = generate(model, PROMPTS, cfg, on_token=lambda step, tok: seen.append(tok.tolist())).tokens
    assert queued == streamed
    assert [list(r) for r in zip(*seen)] == queued


def test_compiled_sampling_uses_the_logits_step_and_matches_eager(model, monkeypatch):
    """temperature > 0: the compiled step returns logits and the sample is drawn outside it."""
    counter = CompileCounter()
    torch._dynamo.reset()
    monkeypatch.setattr(sampling, "_COMPILED", {"reduce-overhead": torch.compile(sampling.decode_one_token, backend=counter, fullgraph=True)})
    monkeypatch.setattr(sampling, "_REUSED", {})
    cfg = SamplingConfig(max_new_tokens=7, temperature=0.8, top_k=30, seed=3)
    assert generate(model, PROMPTS, cfg, compile=True).tokens == generate(model, PROMPTS, cfg).tokens
    assert counter.frame_count == 1
    torch._dynamo.reset()
