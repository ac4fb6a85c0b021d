"""attnkit.inspect on CUDA, where the kernels run SDPA, FlexAttention (sparse patterns, LSH, ALiBi
as a score modification) and compiled paths: the recorded rows times V give the fast path's output,
and the models' reference path gives the same weights."""

from __future__ import annotations

import pytest
import torch

import attnkit.attention as A
from attnkit.inspect import attentions, probabilities
from attnkit.models import GPT, gpt_preset
from attnkit.models.transformer import AttentionConfig
from attnkit.positions.config import PositionConfig

pytestmark = pytest.mark.gpu

T, D, H = 256, 64, 4
CASES = {
    "scaled_dot": {},
    "sliding_window": {"window": 33},
    "dilated_window": {"window": 9, "dilation": 2},
    "global_window": {"window": 33, "global_positions": [0, 100]},
    "strided": {"stride": 16},
    "fixed": {"stride": 16, "c": 2},
    "bigbird": {"block": 32, "random_blocks": 1},
    "lsh": {"n_hashes": 2, "n_buckets": 4, "chunk": 32, "backend": "flex"},
    "routing": {"n_clusters": 4, "chunk": 64},
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_rows_times_v_give_the_fast_path_output_on_cuda(kind: str) -> None:
    torch.manual_seed(0)
    kernel = A.build(kind, head_dim=D, n_heads=H, params=CASES[kind]).cuda().eval()
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(2, H, T, D, device="cuda", generator=g) for _ in range(3))
    mask = (torch.arange(T, device="cuda") < torch.tensor([200, T], device="cuda")[:, None])[:, None, None, :]
    causal = kind in ("scaled_dot", "sliding_window", "strided")
    with torch.no_grad():
        out = kernel(q, k, v, mask=mask, causal=causal)
    rows, heads = [0, 17, 150, T - 1], [0, 3]
    w = probabilities(kernel, q, k, mask=mask, causal=causal, heads=heads, rows=rows)
    torch.testing.assert_close(w @ v[:, heads], out[:, heads][:, :, rows], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("position", ["alibi", "rotary"])
def test_gpt_on_cuda_equals_its_reference_path(position: str) -> None:
    torch.manual_seed(0)
    att = AttentionConfig(kind="sliding_window", params={"window": 64}, position=PositionConfig(kind=position))
    model = GPT(gpt_preset("gpt-tiny", context=256, attention=att)).cuda().eval()
    ids = torch.randint(4, 96, (2, 256), device="cuda")
    ref = model(ids, need_weights=True).attentions
    got = attentions(model, ids, rows=[0, 100, 255])
    for a, b in zip(got["self"], ref):
        torch.testing.assert_close(a, b[:, :, [0, 100, 255]], rtol=1e-4, atol=1e-4)
