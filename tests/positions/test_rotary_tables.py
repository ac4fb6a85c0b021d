"""The shared cos/sin tables and the custom backward of the rotary embedding against RoFormer eq. (34)
written out pair by pair with autograd's own gradient, and the compiled expression against the eager one."""

from __future__ import annotations

import pytest
import torch

from attnkit.positions import rotary
from attnkit.positions.rotary import RotaryEmbedding

B, H, T, D = 2, 3, 9, 16


def by_pairs(x: torch.Tensor, pos: torch.Tensor, theta: torch.Tensor, rotary_dim: int, layout: str) -> torch.Tensor:
    """Eq. (34) on each feature pair (x_a, x_b) -> (x_a cos - x_b sin, x_a sin + x_b cos), differentiated by autograd."""
    angle = pos.double()[..., :, None] * theta.double()  # (..., T, d_rot/2)
    cos, sin = angle.cos().float(), angle.sin().float()
    r = rotary_dim // 2
    if layout == "half":
        a, b = x[..., :r], x[..., r:rotary_dim]
        rot = torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)
    else:
        a, b = x[..., 0:rotary_dim:2], x[..., 1:rotary_dim:2]
        rot = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)
    return torch.cat((rot, x[..., rotary_dim:]), dim=-1)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rotary_dim", [D, D // 2])
@pytest.mark.parametrize("explicit", [False, True])
def test_forward_and_backward_match_the_pairwise_rotation(layout: str, rotary_dim: int, explicit: bool) -> None:
    torch.manual_seed(0)
    rope = RotaryEmbedding(D, rotary_dim=rotary_dim, layout=layout)  # type: ignore[arg-type]
    qkv = torch.randn(B, T, 3 * H, D, requires_grad=True)  # q and k as strided views of one projection
    q, k, _ = qkv.split(H, dim=2)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    offset = 4
    pos = torch.arange(offset, offset + T)
    got_q, got_k = rope(q, k, pos if explicit else offset)
    want_q, want_k = (by_pairs(x, pos, rope.theta, rotary_dim, layout) for x in (q, k))
    torch.testing.assert_close(got_q, want_q, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_k, want_k, atol=1e-5, rtol=0)
    gq, gk = torch.randn_like(got_q), torch.randn_like(got_k)
    got_grad = torch.autograd.grad((got_q, got_k), qkv, (gq, gk))[0]
    want_grad = torch.autograd.grad((want_q, want_k), qkv, (gq, gk))[0]
    torch.testing.assert_close(got_grad, want_grad, atol=1e-5, rtol=0)


def test_per_row_positions_and_bf16_follow_the_input_dtype() -> None:
    torch.manual_seed(1)
    rope = RotaryEmbedding(D)
    q, k = torch.randn(B, H, T, D), torch.randn(B, 1, T, D)  # one key head (multi-query)
    pos = torch.stack((torch.arange(T), torch.arange(T).clamp(min=3) - 3))  # (B, T): left padding in row 1
    got_q, got_k = rope(q, k, pos)
    for row in range(B):
        torch.testing.assert_close(got_q[row], by_pairs(q[row], pos[row], rope.theta, D, "half"), atol=1e-5, rtol=0)
        torch.testing.assert_close(got_k[row], by_pairs(k[row], pos[row], rope.theta, D, "half"), atol=1e-5, rtol=0)
    bq, bk = rope(q.bfloat16(), k.bfloat16(), 0)
    assert bq.dtype == bk.dtype == torch.bfloat16
    torch.testing.assert_close(bq.float(), by_pairs(q, torch.arange(T), rope.theta, D, "half"), atol=3e-2, rtol=2e-2)


def test_tables_are_shared_sliced_and_keyed_by_the_frequencies() -> None:
    rotary._TABLES.clear()
    a, b = RotaryEmbedding(D, base=123.0), RotaryEmbedding(D, base=123.0)
    ca, _, _ = a.tables(0, T, torch.device("cpu"), torch.float32)
    cb, _, _ = b.tables(2, T - 2, torch.device("cpu"), torch.float32)
    assert cb.data_ptr() == ca[2:].data_ptr()  # one table for both modules, a cache offset is a slice
    scaled = RotaryEmbedding(D, base=123.0, scaling="linear", factor=4.0)
    cs, _, _ = scaled.tables(0, T, torch.device("cpu"), torch.float32)
    assert cs.data_ptr() != ca.data_ptr() and not torch.equal(cs, ca)
    want = by_pairs(torch.ones(1, 1, T, D), torch.arange(T), scaled.theta, D, "half")  # x = 1: cos - sin, sin + cos
    torch.testing.assert_close(scaled(torch.ones(1, 1, T, D), torch.ones(1, 1, T, D), 0)[0], want, atol=1e-5, rtol=0)
    longer, _, _ = a.tables(0, 4 * T, torch.device("cpu"), torch.float32)  # the table grows; old rows keep their values
    assert longer.shape == (4 * T, D) and torch.equal(longer[:T], ca)
    explicit = torch.arange(T)
    assert a.tables(explicit, T, torch.device("cpu"), torch.float32)[0] is b.tables(explicit, T, torch.device("cpu"), torch.float32)[0]


def test_tables_made_under_inference_mode_train_afterwards() -> None:
    rotary._TABLES.clear()
    rope = RotaryEmbedding(D)
    with torch.inference_mode():
        rope(torch.randn(1, H, T, D), torch.randn(1, H, T, D), 0)
    q = torch.randn(1, H, T, D, requires_grad=True)
    out, _ = rope(q, q.detach(), 0)
    out.sum().backward()
    assert q.grad is not None and q.grad.shape == q.shape


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_compiled_expression_matches_eager(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside torch.compile the rotation is one expression ``x * C + swap(x) * S`` with tables computed in the graph."""
    torch.manual_seed(2)
    rope = RotaryEmbedding(D, rotary_dim=D // 2, layout=layout)  # type: ignore[arg-type]
    q, k = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    eager = rope(q, k, 3)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    n_tables = len(rotary._TABLES)
    traced = rope(q, k, 3)
    assert len(rotary._TABLES) == n_tables  # no cache touched
    for got, want in zip(traced, eager):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_bf16_forward_and_backward_stay_near_the_fp32_rotation(layout: str) -> None:
    torch.manual_seed(3)
    rope = RotaryEmbedding(D, rotary_dim=D // 2, layout=layout)  # type: ignore[arg-type]
    q = torch.randn(B, H, T, D)
    qb = q.bfloat16().requires_grad_()
    got = rope(qb, qb.detach(), 2)[0]
    want = by_pairs(qb.detach().float(), torch.arange(2, 2 + T), rope.theta, D // 2, layout)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, atol=3e-2, rtol=2e-2)
    g = torch.randn(B, H, T, D)
    got.backward(g.bfloat16())
    x = qb.detach().float().requires_grad_()
    by_pairs(x, torch.arange(2, 2 + T), rope.theta, D // 2, layout).backward(g)
    torch.testing.assert_close(qb.grad.float(), x.grad, atol=3e-2, rtol=2e-2)
