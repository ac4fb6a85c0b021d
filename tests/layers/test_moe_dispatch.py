"""The Switch layer's fixed-shape dispatch against a loop over tokens written from the papers' definitions."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.layers.ffn import FeedForward
from attnkit.layers.moe import MoEConfig, SwitchFFN, queue_places


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


@pytest.mark.parametrize("with_padding", [False, True])
def test_queue_places_count_each_experts_choices_in_order(with_padding):
    torch.manual_seed(4)
    expert = torch.randint(0, 5, (200,))
    real = torch.rand(200) > 0.3 if with_padding else None
    place, routed = queue_places(expert, 5, real)
    taken = [0] * 5
    for j, e in enumerate(expert.tolist()):
        if real is None or real[j]:
            taken[e] += 1
            assert place[j] == taken[e]
    assert routed.tolist() == taken


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("padded", [False, True])
def test_forward_and_backward_trace_as_one_graph(top_k, padded):
    """No host read or data-dependent shape: dynamo captures the forward, AOTAutograd the backward, without a break."""
    torch.manual_seed(top_k)
    layer = SwitchFFN(8, 16, config=MoEConfig(n_experts=4, top_k=top_k, capacity_factor=0.75)).train()
    layer.keep = torch.tensor([[True] * 6 + [False] * 2, [True] * 8]) if padded else None
    x = torch.randn(2, 8, 8, requires_grad=True)
    torch._dynamo.reset()
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    got = compiled(x)
    load, dropped = layer.load.clone(), layer.dropped.clone()
    layer.load.zero_()
    layer.dropped.zero_()
    want = layer(x)
    assert torch.equal(got, want) and dropped.sum() > 0
    assert torch.equal(load, layer.load) and torch.equal(dropped, layer.dropped) and load.sum() == top_k * (14 if padded else 16)
    params = [x, *layer.parameters()]
    for a, b in zip(torch.autograd.grad(got.sum(), params), torch.autograd.grad(want.sum(), params)):
        assert torch.equal(a, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the float32 router and the experts' input cast trace too
        torch._dynamo.reset()
        assert torch.equal(torch.compile(layer, backend="eager", fullgraph=True)(x), layer(x))


def test_the_router_runs_in_float32_under_autocast():
    """Switch section 2.4: the router's logits in float32 even when the experts run in bfloat16."""
    torch.manual_seed(6)
    layer = SwitchFFN(8, 16, config=MoEConfig(n_experts=4)).train()
    x = torch.randn(2, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert layer.router_logits.dtype == torch.float32
    want = (x.double() @ layer.router.weight.double().t()).float()
    torch.testing.assert_close(layer.router_logits, want, atol=1e-6, rtol=1e-6)  # a bfloat16 linear map is off by ~1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_training_step_records_as_a_cuda_graph_without_host_syncs():
    """Forward and backward of a padded top-2 layer under bf16 autocast: no synchronising call, and the replay equals eager."""
    torch.manual_seed(7)
    layer = SwitchFFN(32, 64, config=MoEConfig(n_experts=4, top_k=2, capacity_factor=0.75)).cuda().train()
    layer.keep = (torch.arange(64, device="cuda") < 50).view(2, 32)
    x = torch.randn(2, 32, 32, device="cuda", requires_grad=True)

    def step() -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = layer(x)
        y.float().square().sum().backward()
        return y

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    torch.cuda.set_sync_debug_mode("error")  # a synchronising call (.item(), a device-to-host copy, nonzero) raises
    try:
        with torch.cuda.stream(side):
            want = step()  # eager, on a side stream as before a capture
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.current_stream().wait_stream(side)
    grads = [p.grad.clone() for p in (x, *layer.parameters())]
    for p in (x, *layer.parameters()):
        p.grad = None
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = step()
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(got, want)
    for p, g in zip((x, *layer.parameters()), grads):
        torch.testing.assert_close(p.grad, g)


def test_gather_rows_matches_index_select_and_its_gradient():
    """gather_rows' gathers both ways against torch's index_select, whose backward adds the gradient into place: a partial
    permutation (rows 1 and 4 of x go nowhere, output rows 0 and 5 take none) gives the same values and gradients."""
    from attnkit.attention.gather import gather_rows, inverse_index

    torch.manual_seed(0)
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    back = torch.tensor([2, 7, 4, 1, 7, 3])  # x's row i goes to output row back[i]; 7 = the number of output rows: nowhere
    to = inverse_index(back, 7)  # output row r reads x[to[r]]; 6 = len(x): a zero row
    assert to.tolist() == [6, 3, 0, 5, 2, 6, 6]
    y = gather_rows(x, to, back, True)
    ext = torch.cat([x, torch.zeros(1, 3, dtype=torch.float64)])
    ref = ext.index_select(0, to)
    g = torch.randn_like(ref)
    assert torch.equal(y, ref)
    (gx,) = torch.autograd.grad(y, x, g)
    (gref,) = torch.autograd.grad(ref, x, g)
    assert torch.equal(gx, gref)
    assert torch.equal(gx[1], torch.zeros(3, dtype=torch.float64))
    torch.autograd.gradcheck(lambda t: gather_rows(t, to, back, True), (x,))
