"""The FlexAttention score_mods of ALiBi and T5 (the bucket table's) against their dense biases, in eager
FlexAttention on the CPU (the GPU path compiles the same functions), outputs and the T5 table's gradient. T5's
training band is tested in ``test_t5_band.py`` and ``test_t5_bias.py``."""

from __future__ import annotations

import math

import pytest
import torch

flex_attention = pytest.importorskip("torch.nn.attention.flex_attention").flex_attention

from attnkit.positions.alibi import ALiBi  # noqa: E402
from attnkit.positions.t5_bias import T5RelativeBias  # noqa: E402

TQ, TK, OFF, D = 6, 9, 3, 8
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.mark.parametrize("kind", ["alibi", "t5_bias"])
@pytest.mark.parametrize("causal", [False, True])
def test_score_mod_equals_the_dense_bias(kind: str, causal: bool) -> None:
    torch.manual_seed(0)
    mod = ALiBi(4) if kind == "alibi" else T5RelativeBias(4, n_buckets=8, max_distance=6, train_path="dense")
    if isinstance(mod, T5RelativeBias):
        torch.nn.init.normal_(mod.table.weight)
    q, k, v = torch.randn(2, 4, TQ, D), torch.randn(2, 4, TK, D), torch.randn(2, 4, TK, D)
    inner = mod.score_mod(OFF, causal=causal)
    assert inner is not None

    def score_mod(s, b, h, qi, ki):  # the causal mask as the block mask would apply it
        return torch.where(ki <= qi + OFF, inner(s, b, h, qi, ki), -float("inf")) if causal else inner(s, b, h, qi, ki)

    out = flex_attention(q, k, v, score_mod=score_mod)
    bias = mod.bias(q, k, torch.arange(OFF, OFF + TQ), causal=causal, scale=1 / math.sqrt(D), q_offset=OFF)
    s = q @ k.transpose(-1, -2) / math.sqrt(D) + bias
    if causal:
        s = s.masked_fill(torch.arange(TK)[None, :] > torch.arange(OFF, OFF + TQ)[:, None], -float("inf"))
    ref = s.softmax(-1) @ v
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    if isinstance(mod, T5RelativeBias):
        (g_flex,) = torch.autograd.grad(out.square().sum(), [mod.table.weight])
        (g_ref,) = torch.autograd.grad(ref.square().sum(), [mod.table.weight])
        torch.testing.assert_close(g_flex, g_ref, atol=1e-5, rtol=1e-4)
