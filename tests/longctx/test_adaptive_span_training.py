"""Adaptive span under training: a span pushed below 0 comes back to the box and keeps its gradient, and the
``shakespeare-adaptive-span`` recipe's spans, trained a few steps, are z = S clamp(p, 0, 1) of the parameters
and move off their start."""

from __future__ import annotations

import math

import torch

import attnkit.attention as A
from attnkit.attention.adaptive_span import span_kernels, span_penalty, spans
from attnkit.data.lm import LMTask
from attnkit.models.gpt import GPT, gpt_preset
from attnkit.models.transformer import AttentionConfig
from attnkit.recipes import get as get_recipe


def test_span_below_zero_is_projected_and_keeps_its_gradient() -> None:
    torch.manual_seed(0)
    k = A.build("adaptive_span", head_dim=4, n_heads=2, params={"max_span": 16, "ramp": 4, "init": 0.0}).double()
    with torch.no_grad():
        k.span_param.copy_(torch.tensor([-0.01, 1.2], dtype=torch.float64))  # one step out of [0, 1] each way
    q, key, v = (torch.randn(1, 2, 24, 4, dtype=torch.float64) for _ in range(3))
    k.eval()
    k(q, key, v, causal=True)
    assert k.span_param.tolist() == [-0.01, 1.2]  # evaluation leaves the parameter alone
    k.train()
    out = k(q, key, v, causal=True)
    assert k.span_param.tolist() == [0.0, 1.0]
    (grad,) = torch.autograd.grad(out.square().sum(), k.span_param)
    assert (grad.abs() > 0).all()  # at z = 0 the keys at distance 1..R-1 are on the ramp; at z = S those at S+1..S+R-1
    # and the gradient is that of eq. 3 at the projected span, m_z(x) = clamp((R + z - x) / R, 0, 1) multiplied in
    z = (16 * k.span_param.clamp(0, 1))[:, None, None]
    x = torch.arange(24.0, dtype=torch.float64)[:, None] - torch.arange(24.0, dtype=torch.float64)[None, :]
    raw = (4 + z - x) / 4
    m = torch.where(raw > 0, raw.clamp(max=1.0), torch.zeros_like(raw)) * (x >= 0)  # m = 0 exactly: outside the span
    s = q @ key.transpose(-1, -2) / 2
    e = m * torch.exp(s - s.amax(-1, keepdim=True))
    want = (e / e.sum(-1, keepdim=True)) @ v
    (want_grad,) = torch.autograd.grad(want.square().sum(), k.span_param)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(grad, want_grad, atol=1e-10, rtol=1e-8)


def test_penalty_alone_drives_a_span_to_zero_and_the_loss_brings_it_back() -> None:
    k = A.build("adaptive_span", head_dim=4, n_heads=1, params={"max_span": 8, "ramp": 4, "init": 0.05, "span_loss": 1.0})
    opt = torch.optim.SGD(k.parameters(), lr=0.05)
    k.train()
    q = torch.zeros(1, 1, 12, 4)
    for _ in range(5):  # the penalty's gradient S lambda = 8 takes p below 0 in one step
        opt.zero_grad()
        k(q, q, q, causal=True)
        span_penalty(k).backward()
        opt.step()
    assert float(k.span_param.detach()) < 0 and spans(k)["span_max"] == 0.0
    v = torch.zeros(1, 1, 12, 4)
    v[..., 8:11, 0] = 1.0  # the last query's output rewards the keys 1..3 back, on the ramp of z = 0: a longer span
    for _ in range(5):
        opt.zero_grad()
        out = k(q, q, v, causal=True)
        (-out[..., -1, 0].sum()).backward()
        opt.step()
    assert spans(k)["span_max"] > 0.0


def test_recipe_spans_after_a_few_steps_are_s_times_clamped_parameters() -> None:
    torch.manual_seed(0)
    recipe = get_recipe("shakespeare-adaptive-span")
    params = dict(recipe.model.attention.params)
    assert params["span_loss"] == 2e-6 and 0.0 < params["init"] <= 1.0  # the paper's lambda; a span that can move both ways
    params.update(max_span=48, ramp=4)
    cfg = gpt_preset("gpt-tiny", n_layers=2, context=48, attention=AttentionConfig(kind="adaptive_span", params=params))
    model = GPT(cfg)
    text = torch.randint(0, 96, (2000,))
    task = LMTask(text, text[:400], context=48, batch_size=4)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    model.train()
    batches = task.batches(0, 0)
    for _ in range(6):
        opt.zero_grad()
        loss, _ = task.loss(model, next(batches))
        loss.backward()
        opt.step()
    kernels = span_kernels(model)
    by_hand = [z for k in kernels for z in (48 * k.span_param.detach().clamp(0, 1)).tolist()]
    report = spans(model)
    assert math.isclose(report["span_mean"], sum(by_hand) / len(by_hand), rel_tol=1e-6)
    assert math.isclose(report["span_max"], max(by_hand), rel_tol=1e-6)
    assert [z for layer in report["spans"] for z in layer] == [round(z, 2) for z in by_hand]
    assert any(z > 0 for z in by_hand) and not all(z == 48 for z in by_hand)
    assert any(abs(z - 48 * params["init"]) > 1e-3 for z in by_hand)  # the spans moved off their start
    metrics = task.evaluate(model)
    assert math.isclose(metrics["span_mean"], report["span_mean"], rel_tol=1e-6)
