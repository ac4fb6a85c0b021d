"""attnkit.attention.flex.CompiledFlex: compiled FlexAttention that neither runs out of variants nor falls back silently.

A workload that alternates training and evaluation over a few key lengths compiles one variant per grad mode
and shape. Dynamo's default limit per compiled function is small; past it, a ``torch.compile(flex_attention)``
silently runs eager FlexAttention (the unfused path that materialises the scores). Here the global limit is set
to 1 to stand for a workload with more variants than that limit, on CPU, where compiled FlexAttention runs
forward only; outputs are checked against a dense masked softmax.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from attnkit.attention import flex

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(flex.flex_attention is None, reason="no FlexAttention"),
    pytest.mark.skipif(not torch._dynamo.is_dynamo_supported(), reason="torch.compile is unsupported here"),
    pytest.mark.skipif(not torch.cuda.is_available() and shutil.which("g++") is None and shutil.which("c++") is None,
                       reason="compiled FlexAttention on CPU needs a C++ compiler"),
]

TQ, D = 16, 16


def dense_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T scale) v with the bottom-right aligned causal mask (query i at key Tk - Tq + i)."""
    tq, tk = q.shape[-2], k.shape[-2]
    keep = torch.arange(tk)[None, :] <= torch.arange(tq)[:, None] + (tk - tq)  # (Tq, Tk)
    scores = (q @ k.transpose(-2, -1) * scale).masked_fill(~keep, float("-inf"))
    return scores.softmax(-1) @ v


def causal_mask(tq: int, tk: int):
    off = tk - tq
    return flex.create_block_mask(lambda b, h, i, j: j <= i + off, B=None, H=None, Q_LEN=tq, KV_LEN=tk, device="cpu")


@pytest.fixture
def eager_calls(monkeypatch):
    """The calls that reached eager (unfused) FlexAttention: it announces itself through ``_warn_once``."""
    import torch.nn.attention.flex_attention as flex_api

    seen: list[str] = []
    original = flex_api._warn_once

    def record(warning_id, *args, **kwargs):
        seen.append(warning_id)
        return original(warning_id, *args, **kwargs)

    monkeypatch.setattr(flex_api, "_warn_once", record)
    return seen


def test_grad_modes_and_key_lengths_stay_compiled(monkeypatch, eager_calls: list[str]) -> None:
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    fn = flex.compiled()
    stats = torch._dynamo.utils.counters["stats"]
    torch.manual_seed(0)
    scale = D**-0.5
    variants = [(grad, tk) for grad in (True, False) for tk in (TQ, 2 * TQ)]
    for _ in range(2):  # the second round finds every variant compiled
        before = stats["unique_graphs"]
        for grad, tk in variants:
            q, k, v = torch.randn(1, 2, TQ, D), torch.randn(1, 2, tk, D), torch.randn(1, 2, tk, D)
            with torch.set_grad_enabled(grad):
                out = fn(q, k, v, block_mask=causal_mask(TQ, tk), scale=scale)
            torch.testing.assert_close(out, dense_reference(q, k, v, scale), atol=1e-5, rtol=1e-5)
        assert stats["unique_graphs"] - before == (len(variants) if _ == 0 else 0)
    assert "flex_attention_performance" not in eager_calls  # never the unfused eager path
    assert torch._dynamo.config.recompile_limit == 1  # the global limit is left as it was


def test_past_the_limit_raises_instead_of_falling_back(monkeypatch, eager_calls: list[str]) -> None:
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 0)
    monkeypatch.setattr(flex, "RECOMPILE_LIMIT", 0)  # no variant allowed: the first call is past the limit
    q = torch.randn(1, 2, TQ, D)
    with torch.no_grad(), pytest.raises(RuntimeError, match="RECOMPILE_LIMIT"):
        flex.CompiledFlex()(q, q, q, block_mask=causal_mask(TQ, TQ))
    assert "flex_attention_performance" not in eager_calls
