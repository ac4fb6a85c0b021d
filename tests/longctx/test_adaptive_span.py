"""Adaptive attention span: the soft mask against its formula, the kernel and the span's gradient against
eq. 3 computed with the mask multiplied in, the L1 penalty, and a GPT trained with it."""

from __future__ import annotations

import math

import torch

import attnkit.attention as A
from attnkit.attention.adaptive_span import span_penalty, spans
from attnkit.data.lm import LMTask
from attnkit.models.gpt import GPT, gpt_preset
from attnkit.models.transformer import AttentionConfig


def kernel(h: int = 2, max_span: int = 16, ramp: int = 3, init: float = 0.3) -> torch.nn.Module:
    k = A.build("adaptive_span", head_dim=4, n_heads=h, params={"max_span": max_span, "ramp": ramp, "init": init}).double()
    with torch.no_grad():
        k.span_param.copy_(torch.tensor([0.3, 0.55], dtype=torch.float64)[:h])  # z = 4.8 and 8.8
    return k


def test_soft_mask_against_formula() -> None:
    k = kernel()
    x = torch.arange(-2, 15, dtype=torch.float64)[None, :]  # (1, 17) distances
    got = k.soft_mask(x).detach()  # (H, 1, 17)
    for h, z in enumerate([0.3 * 16, 0.55 * 16]):
        for c, d in enumerate(range(-2, 15)):
            want = min(1.0, max(0.0, (3 + z - d) / 3))
            assert math.isclose(float(got[h, 0, c]), want, abs_tol=1e-12)


def reference(k: torch.nn.Module, q, key, v, pos: list[int]) -> torch.Tensor:
    """Eq. 3 with the mask multiplied into exp(s): a = m exp(s) / sum m exp(s); query i at position pos[i]."""
    s = q @ key.transpose(-1, -2) / math.sqrt(q.shape[-1])  # (B, H, Tq, Tk)
    tk = key.shape[-2]
    x = torch.tensor(pos, dtype=torch.float64)[:, None] - torch.arange(tk, dtype=torch.float64)[None, :]
    z = 16 * k.span_param.clamp(0, 1)[:, None, None]
    m = ((3 + z - x) / 3).clamp(0, 1) * (x >= 0)  # causal
    e = m * torch.exp(s - s.amax(-1, keepdim=True))
    return (e / e.sum(-1, keepdim=True)) @ v


def test_kernel_and_span_gradient_against_eq3() -> None:
    torch.manual_seed(0)
    k = kernel()
    q = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    key, v = torch.randn(2, 2, 20, 4, dtype=torch.float64), torch.randn(2, 2, 20, 4, dtype=torch.float64)
    g = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    out = k(q, key, v, causal=True)  # queries at 16..19; keys before 16 - 8.8 - 3 dropped
    (got_grad,) = torch.autograd.grad((out * g).sum(), k.span_param)
    want = reference(k, q, key, v, [16, 17, 18, 19])
    (want_grad,) = torch.autograd.grad((want * g).sum(), k.span_param)
    torch.testing.assert_close(out, want, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-10, rtol=1e-8)
    assert (got_grad.abs() > 0).all()


def test_query_position_from_a_cache_mask() -> None:
    torch.manual_seed(1)
    k = kernel()
    q = torch.randn(1, 2, 1, 4, dtype=torch.float64)
    key, v = torch.randn(1, 2, 12, 4, dtype=torch.float64), torch.randn(1, 2, 12, 4, dtype=torch.float64)
    mask = (torch.arange(12) <= 9)[None, None, None, :]  # a static cache: slots after 9 are empty
    torch.testing.assert_close(k(q, key, v, mask=mask), reference(k, q, key, v, [9]), atol=1e-12, rtol=1e-10)


def test_penalty_and_report() -> None:
    torch.manual_seed(0)
    cfg = gpt_preset("gpt-tiny", n_layers=2, attention=AttentionConfig(kind="adaptive_span", params={"max_span": 32, "ramp": 4,
                                                                                                   "init": 0.5, "span_loss": 0.1}))
    model = GPT(cfg)
    z = [m.span for m in model.modules() if hasattr(m, "span_param")]
    assert math.isclose(float(span_penalty(model).detach()), 0.1 * float(torch.cat(z).detach().sum()), rel_tol=1e-6)  # lambda sum z
    report = spans(model)
    assert report["span_mean"] == 16.0 and len(report["spans"]) == 2 and len(report["spans"][0]) == 4
    stream = torch.randint(0, 96, (400,))
    task = LMTask(stream, stream, context=16, batch_size=2)
    loss, _ = task.loss(model, next(task.batches(0, 0)))
    loss.backward()
    assert all(m.span_param.grad is not None and m.span_param.grad.abs().sum() > 0 for m in model.modules() if hasattr(m, "span_param"))
    assert "span_mean" in task.evaluate(model)


def autocast_inputs(h: int, tq: int, tk: int, d: int = 8) -> tuple[torch.Tensor, ...]:
    """q, k, v from a linear map under bfloat16 autocast (as a model's projections give them) and the map."""
    torch.manual_seed(0)
    proj = torch.nn.Linear(d, d)
    xs = torch.randn(1, h, tk, d)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q, key, v = proj(xs[:, :, tk - tq:]), proj(2 * xs), proj(-xs)
    assert q.dtype == torch.bfloat16
    return q, key, v


def float64_log_mask(z: torch.Tensor, ramp: int, pos: torch.Tensor, tk: int) -> torch.Tensor:
    """log clamp((R + z - x) / R, 0, 1) in float64 for queries at ``pos`` and keys 0..tk-1: ``(H, Tq, Tk)``."""
    x = pos.double()[:, None] - torch.arange(tk, dtype=torch.float64)[None, :]
    return ((ramp + z.double()[:, None, None] - x) / ramp).clamp(0, 1).log()


def test_bf16_autocast_span_at_max_gets_no_gradient() -> None:
    # S = 384, R = 32, 128 queries after a memory of 256: distances 0..383, every r >= 33/32 > 1, so m = 1 on every
    # key and the span has no gradient (eq. 2); 383 rounded to 384 in bfloat16 would give r = 1 and a gradient
    k = A.build("adaptive_span", head_dim=8, n_heads=2, params={"max_span": 384, "ramp": 32, "init": 1.0,
                                                                "implementation": "sdpa"}).train()
    q, key, v = autocast_inputs(2, 128, 384)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = k(q, key, v, causal=True)
        bias = k.span_bias(q, 384, None, True)  # (H, 128, 384)
    (grad,) = torch.autograd.grad(out.float().square().sum(), k.span_param)
    assert torch.equal(grad, torch.zeros(2))
    want = float64_log_mask(k.span.detach(), 32, torch.arange(256, 384), 384).to(torch.bfloat16)
    assert torch.equal(bias, want) and torch.equal(want, torch.zeros_like(want))


def test_bf16_autocast_mask_near_the_largest_distances_against_float32_formula() -> None:
    k = A.build("adaptive_span", head_dim=8, n_heads=2, params={"max_span": 384, "ramp": 32, "implementation": "sdpa"})
    with torch.no_grad():
        k.span_param.copy_(torch.tensor([340.0, 371.5]) / 384)
    q, key, v = autocast_inputs(2, 4, 420)  # queries at 416..419: distances up to 419
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bias = k.span_bias(q, 420, None, True).float()  # (H, 4, 420): a causal mask shared by the batch
    want = float64_log_mask(k.span.detach(), 32, torch.arange(416, 420), 420)
    assert torch.equal(torch.isinf(bias), torch.isinf(want))  # m = 0 from x >= z + R on, in both
    finite = torch.isfinite(want)
    torch.testing.assert_close(bias[finite], want[finite].float(), rtol=2 ** -8, atol=0)  # bfloat16 rounding of the bias
    for h, z in enumerate([340.0, 371.5]):
        for x in (301, 349, 355, 371, 383, 395, 402):  # query 419 at distance x: key 419 - x
            m = min(1.0, max(0.0, (32 + z - x) / 32))
            got = float(bias[h, 3, 419 - x].exp())
            assert (got == 0.0) if m == 0 else math.isclose(got, m, rel_tol=2 ** -7), (h, x, got, m)
