"""The Switch layer's fixed-shape dispatch against a loop over tokens written from the papers' definitions."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.layers.ffn import FeedForward
from attnkit.layers.moe import MoEConfig, SwitchFFN


def naive_switch(layer: SwitchFFN, x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Route each real token (float32 softmax router, top-k, gates renormalised for k=2), give places to first choices in
    token order and then to second choices (GShard), each expert taking at most ceil(cf * k * tokens / N) (Switch
    eq. 3); an accepted token adds gate * relu(x W1 + b1) W2 + b2, a dropped one adds nothing.

    Returns:
        The output, tokens routed per expert, tokens dropped per expert.
    """
    n, k = layer.n_experts, layer.config.top_k
    flat_x, flat_keep = x.reshape(-1, x.shape[-1]), keep.reshape(-1)
    real = [t for t in range(flat_x.shape[0]) if flat_keep[t]]
    capacity = math.ceil(layer.capacity_factor * k * len(real) / n)
    out = torch.zeros_like(flat_x)
    routed, dropped, taken = torch.zeros(n), torch.zeros(n), [0] * n
    choices = {}
    for t in real:
        p = torch.softmax(flat_x[t].float() @ layer.router.weight.float().t(), -1)  # the router in float32 (Switch 2.4)
        top = p.topk(k)
        choices[t] = (top.indices.tolist(), ((top.values / top.values.sum()) if k == 2 else top.values).to(x.dtype))
    for c in range(k):
        for t in real:
            e, g = choices[t][0][c], choices[t][1][c]
            routed[e] += 1
            if taken[e] == capacity:
                dropped[e] += 1
                continue
            taken[e] += 1
            w1, b1, w2, b2 = layer.w1.weight[e], layer.w1.bias[e], layer.w2.weight[e], layer.w2.bias[e]
            out[t] = out[t] + g * (torch.relu(flat_x[t] @ w1 + b1) @ w2 + b2)
    return out.reshape(x.shape), routed, dropped


@pytest.mark.parametrize("top_k", [1, 2])
def test_dispatch_equals_a_loop_over_tokens_with_drops_and_padding(top_k):
    torch.manual_seed(top_k)
    layer = SwitchFFN(6, 10, "relu", config=MoEConfig(n_experts=4, top_k=top_k, capacity_factor=0.75)).double().train()
    with torch.no_grad():
        layer.router.weight.mul_(8)  # confident, uneven routing: some experts overflow
        layer.w1.bias.normal_()
        layer.w2.bias.normal_()
    x = torch.randn(3, 7, 6, dtype=torch.float64, requires_grad=True)
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[1, 5:] = False
    keep[2, 2:] = False
    layer.keep = keep
    got = layer(x)
    want, routed, dropped = naive_switch(layer, x, keep)
    assert dropped.sum() > 0 and dropped.sum() < routed.sum()  # some, not all, tokens dropped
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)  # the float32 router bounds the agreement
    assert torch.equal(layer.load, routed.to(layer.load.dtype)) and torch.equal(layer.dropped, dropped.to(layer.dropped.dtype))
    assert not got[~keep].any()
    weights = torch.randn_like(got)
    params = [x, *layer.parameters()]
    g_got = torch.autograd.grad((got * weights).sum(), params, allow_unused=True)
    g_want = torch.autograd.grad((want * weights).sum(), params, allow_unused=True)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)  # the float32 router bounds the agreement


def test_a_state_dict_with_one_ffn_per_expert_loads_into_the_stacked_weights():
    torch.manual_seed(5)
    experts = torch.nn.ModuleList(FeedForward(6, 10) for _ in range(3))
    state = {"router.weight": torch.randn(3, 6), **{f"experts.{k}": v for k, v in experts.state_dict().items()}}
    layer = SwitchFFN(6, 10, config=MoEConfig(n_experts=3)).eval()
    layer.load_state_dict(state)
    x = torch.randn(5, 6)
    for i in range(3):
        torch.testing.assert_close(layer.expert(i, x), experts[i](x))


def test_the_forward_traces_as_one_graph():
    """No host read or data-dependent shape: dynamo captures the whole forward without a break."""
    layer = SwitchFFN(8, 16, config=MoEConfig(n_experts=4, top_k=2)).train()
    layer.keep = torch.tensor([[True] * 6 + [False] * 2])
    x = torch.randn(1, 8, 8)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    torch.manual_seed(0)
    got = compiled(x)
    load = layer.load.clone()
    layer.load.zero_()
    want = layer(x)
    torch.testing.assert_close(got, want)
    assert torch.equal(load, layer.load) and load.sum() == 12
