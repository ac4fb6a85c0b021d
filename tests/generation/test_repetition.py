"""Repetition penalty and no-repeat n-gram blocking against transformers' logits processors, and in generate."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor

import attnkit
from attnkit.generation.processors import banned_ngram_tokens, no_repeat_ngram, repetition_penalty
from attnkit.generation.sampling import SamplingConfig, generate
from attnkit.models.gpt import GPTConfig

V = 12


def sequences() -> torch.Tensor:
    return torch.tensor([[1, 5, 6, 5, 6, 7, 5, 6], [3, 3, 4, 9, 3, 4, 2, 3], [0, 1, 2, 3, 4, 5, 6, 7]])


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty_matches_transformers(penalty):
    torch.manual_seed(0)
    logits = torch.randn(3, V) * 3  # positive and negative logits of seen tokens
    ids = sequences()
    ours = repetition_penalty(logits, ids.tolist(), penalty)
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram_matches_transformers(n):
    torch.manual_seed(1)
    logits = torch.randn(3, V)
    ids = sequences()
    ours = no_repeat_ngram(logits, ids.tolist(), n)
    theirs = NoRepeatNGramLogitsProcessor(n)(ids, logits.clone())
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert banned_ngram_tokens([5, 6, 7, 5, 6], 3) == {7}  # "5 6" was followed by 7


def test_generate_with_both_equals_a_loop_over_transformers_processors():
    torch.manual_seed(0)
    model = attnkit.GPT(GPTConfig(vocab_size=V, context=32, d_model=32, n_heads=2, n_layers=2)).eval()
    prompts = [[4, 5, 4, 5, 4], [7, 8]]
    cfg = SamplingConfig(max_new_tokens=10, temperature=0, repetition_penalty=1.5, no_repeat_ngram_size=2)
    out = generate(model, prompts, cfg).tokens
    rep, ngram = RepetitionPenaltyLogitsProcessor(1.5), NoRepeatNGramLogitsProcessor(2)
    for prompt, got in zip(prompts, out):
        seq = list(prompt)
        with torch.no_grad():
            for _ in range(10):
                ids = torch.tensor([seq])
                logits = model(ids).logits[:, -1]  # the whole prefix recomputed: no cache
                seq.append(int(ngram(ids, rep(ids, logits)).argmax(-1)))
        assert got == seq[len(prompt):]
    plain = generate(model, prompts, SamplingConfig(max_new_tokens=10, temperature=0)).tokens
    assert plain != out  # the adjustments change this output: the comparison can fail


def test_sampling_config_refuses_bad_values():
    from attnkit.errors import ConfigError

    with pytest.raises(ConfigError, match="repetition_penalty"):
        SamplingConfig(repetition_penalty=0.0)
    with pytest.raises(ConfigError, match="no_repeat_ngram_size"):
        SamplingConfig(no_repeat_ngram_size=-1)
