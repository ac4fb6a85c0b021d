"""Adaptive span in FlexAttention against the SDPA reference path: outputs and the gradients of q, k, v, the span
parameter and a positional bias, with a Transformer-XL memory (Tk > Tq) and plain causal; the spans' block table
against its definition checked pair by pair; the choice between the two paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.attention.flex_attention as flex_api

import attnkit.attention as A
from attnkit.attention.adaptive_span import span_blocks


@pytest.fixture
def cpu_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    """The public flex_attention refuses backward on CPU; its eager higher-order op (whose joint graph of the
    score_mod the GPU kernels are generated from) computes it, so the check is lifted for these tests. Eager
    flex_attention traces its op through dynamo, whose variants left by earlier tests in the process would make
    the shapes dynamic: they are cleared first."""
    torch._dynamo.reset()
    monkeypatch.setattr(flex_api, "_validate_device", lambda *a: None)


def kernels(implementation: str, tiles: tuple[int, int]) -> torch.nn.Module:
    k = A.build("adaptive_span", head_dim=16, n_heads=4,
                params={"max_span": 48, "ramp": 5, "implementation": implementation, "flex_tiles": tiles})
    with torch.no_grad():
        k.span_param.copy_(torch.tensor([0.01, 0.37, 0.73, 1.0]))  # z = 0.48 (near 0), 17.76, 35.04, 48 (the max)
    return k.eval()


@pytest.mark.parametrize("tq,tk", [(24, 72), (40, 40)])  # a memory of 48 before 24 queries; plain causal
def test_flex_equals_sdpa_with_gradients(cpu_backward: None, tq: int, tk: int) -> None:
    torch.manual_seed(0)
    b, h, d = 2, 4, 16
    leaves = [torch.randn(b, h, tq, d), torch.randn(b, h, tk, d), torch.randn(b, h, tk, d), 0.5 * torch.randn(b, h, tq, tk)]
    g = torch.randn(b, h, tq, d)
    results = []
    for impl in ("sdpa", "flex"):
        k = kernels(impl, (8, 8))
        q, key, v, bias = [x.clone().requires_grad_() for x in leaves]
        out = k(q, key, v, bias=bias, causal=True)
        grads = torch.autograd.grad((out * g).sum(), [q, key, v, bias, k.span_param])
        results.append((out, grads))
    (want, want_g), (got, got_g) = results
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    for name, gw, gg in zip(("q", "k", "v", "bias", "span"), want_g, got_g):
        torch.testing.assert_close(gg, gw, atol=1e-4, rtol=1e-4, msg=lambda m, n=name: f"grad of {n}: {m}")
    assert (got_g[4][:3].abs() > 1e-6).all()  # the span's gradient flows through the score_mod (keys on each ramp)


def test_short_span_heads_skip_blocks_and_table_against_pairs() -> None:
    torch.manual_seed(1)
    for tq, tk, causal in [(24, 72, True), (21, 53, True), (40, 40, True), (19, 45, False)]:
        reach = torch.tensor([0.3, 5.5, 17.0, 30.0, 60.0]) + 4  # z + R
        needed, full = span_blocks(reach, tq, tk, causal, (8, 16))
        t = torch.arange(tq)[:, None] + tk - tq
        r = torch.arange(tk)[None, :]
        pair = (t - r)[None] < reach[:, None, None]  # m > 0
        ok = (r <= t) if causal else torch.ones(tq, tk, dtype=torch.bool)
        pad = torch.zeros(-(-tq // 8) * 8, -(-tk // 16) * 16, dtype=torch.bool)
        for hh in range(len(reach)):
            for i in range(needed.shape[1]):
                for j in range(needed.shape[2]):
                    blk = (pair[hh] & ok)[i * 8:(i + 1) * 8, j * 16:(j + 1) * 16]
                    whole = ok[i * 8:(i + 1) * 8, j * 16:(j + 1) * 16]
                    inside = pad[i * 8:(i + 1) * 8, j * 16:(j + 1) * 16].numel() == 0 or ((i + 1) * 8 <= tq and (j + 1) * 16 <= tk)
                    assert bool(needed[hh, i, j]) == bool(blk.any()), (tq, tk, hh, i, j)
                    assert bool(full[hh, i, j]) == bool(blk.any() and whole.all() and inside), (tq, tk, hh, i, j)
        if causal and tk > tq:
            assert needed[0].sum() < needed[-1].sum()  # the short head skips key blocks the long one reads


def test_eval_keeps_the_block_mask_until_the_span_changes() -> None:
    k = kernels("flex", (8, 8))
    q, key, v = torch.randn(1, 4, 16, 16), torch.randn(1, 4, 48, 16), torch.randn(1, 4, 48, 16)
    with torch.no_grad():
        k(q, key, v, causal=True)
        first = k._blocks[1]
        k(q, key, v, causal=True)
        assert k._blocks[1] is first
        k.span_param[0] = 1.0  # the short head now reaches every block
        out = k(q, key, v, causal=True)
    assert k._blocks[1] is not first and blocks(first, 0) == 4 and blocks(k._blocks[1], 0) == 11  # 2 key blocks per query block, then all 5 + 6
    ref = kernels("sdpa", (8, 8))
    ref.load_state_dict(k.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(out, ref(q, key, v, causal=True), atol=1e-5, rtol=1e-5)


def blocks(bm: object, head: int) -> int:
    """The (query, key) blocks a head computes, partial and full."""
    return int(bm.kv_num_blocks[0, head].sum() + bm.full_kv_num_blocks[0, head].sum())  # type: ignore[attr-defined]


def test_path_choice() -> None:
    k = kernels("auto", (8, 8))
    q = torch.randn(1, 4, 128, 16)
    assert not k._flex_applies(q, None, False)  # CPU: SDPA by default
    forced = kernels("flex", (8, 8))
    assert forced._flex_applies(q, None, False)
    assert not forced._flex_applies(q, torch.ones(1, 1, 1, 128, dtype=torch.bool), False)  # a mask: SDPA
    assert not forced._flex_applies(q, None, True)  # weights asked for: SDPA
    dropped = A.build("adaptive_span", head_dim=16, n_heads=4, params={"implementation": "flex", "dropout": 0.1})
    assert not dropped.train()._flex_applies(q, None, False) and dropped.eval()._flex_applies(q, None, False)
    with pytest.raises(ValueError, match="implementation"):
        A.build("adaptive_span", head_dim=16, n_heads=4, params={"implementation": "triton"})


def test_bf16_autocast_flex_span_at_max_gets_no_gradient_and_equals_sdpa(cpu_backward: None) -> None:
    # S = 384, R = 32, 128 queries after a memory of 256: every distance 0..383 has r >= 33/32 > 1 (m = 1), so the
    # score_mod's float32 ramp passes no gradient to the span; the output is the SDPA path's under the same autocast
    torch._dynamo.reset()  # eager flex_attention traces its op through dynamo: a recompile after the float32 tests above
    # marks the shapes dynamic, and this PyTorch's fake-tensor pass of the bfloat16 op then fails (unbacked symbol)
    torch.manual_seed(0)
    proj = torch.nn.Linear(16, 16)
    xs = torch.randn(1, 2, 384, 16)
    outs = []
    for impl in ("flex", "sdpa"):
        k = A.build("adaptive_span", head_dim=16, n_heads=2, params={"max_span": 384, "ramp": 32, "init": 1.0,
                                                                     "implementation": impl, "flex_tiles": (64, 64)})
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = k(proj(xs[:, :, 256:]), proj(2 * xs), proj(-xs), causal=True)
        (grad,) = torch.autograd.grad(out.float().square().sum(), k.span_param)
        assert torch.equal(grad, torch.zeros(2)), impl
        outs.append(out.float())
    torch.testing.assert_close(outs[0], outs[1], atol=2e-2, rtol=2e-2)


def test_bf16_autocast_block_mask_from_spans_against_float64_reach() -> None:
    k = A.build("adaptive_span", head_dim=16, n_heads=3, params={"max_span": 384, "ramp": 32, "implementation": "flex",
                                                                 "flex_tiles": (16, 16)}).eval()
    with torch.no_grad():
        k.span_param.copy_(torch.tensor([340.0, 351.5, 384.0]) / 384)  # reach z + R = 372, 383.5, 416
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bm = k.block_mask(3, 32, 416, True, torch.device("cpu"))
    needed, full = span_blocks(k.span.detach().double() + 32, 32, 416, True, (16, 16))
    dense = bm.to_dense()[0].bool()  # (H, nq, nk): the blocks computed, partial or full
    assert torch.equal(dense, needed)
    assert [int(bm.full_kv_num_blocks[0, h].sum()) for h in range(3)] == [int(full[h].sum()) for h in range(3)]
