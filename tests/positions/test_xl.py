"""Transformer-XL's relative attention against a plain loop over the four terms of Dai et al. 2019,
section 3.3, and rel_shift against the explicit index computation out[i, j] = x[i, j + Tq - 1 - i]."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.positions.xl import XLRelative, rel_shift

B, H, D, DM = 2, 3, 4, 12


@pytest.mark.parametrize("tq,tk", [(1, 1), (1, 7), (5, 5), (3, 8), (8, 8)])
def test_rel_shift_is_the_explicit_index(tq: int, tk: int) -> None:
    x = torch.randn(2, 3, tq, tq + tk - 1)
    want = torch.empty(2, 3, tq, tk)
    for i in range(tq):
        for j in range(tk):
            want[:, :, i, j] = x[:, :, i, j + tq - 1 - i]
    assert torch.equal(rel_shift(x, tk), want)


def test_rel_shift_refuses_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="distance columns"):
        rel_shift(torch.zeros(3, 9), 5)


def encoding(d: int) -> torch.Tensor:
    """R_d: the sinusoid of distance d, [sin(d / 10000^(2k/DM)) for k] + [cos(...) for k]."""
    ang = [d / 10000 ** (2 * k / DM) for k in range(DM // 2)]
    return torch.tensor([math.sin(a) for a in ang] + [math.cos(a) for a in ang], dtype=torch.float64)


def loop_scores(mod: XLRelative, q: torch.Tensor, k: torch.Tensor, q_pos: list[int]) -> torch.Tensor:
    w_r = mod.r_proj.weight.detach().view(H, D, DM)  # W_R per head
    u, v = mod.u.detach(), mod.v.detach()
    out = torch.zeros(q.shape[0], H, len(q_pos), k.shape[2], dtype=torch.float64)
    for b in range(q.shape[0]):
        for h in range(H):
            for i, pi in enumerate(q_pos):
                for j in range(k.shape[2]):
                    p = w_r[h] @ encoding(pi - j)  # W_R R_{i-j}
                    a = q[b, h, i] @ k[b, h, j]
                    bb = q[b, h, i] @ p
                    c = u[h] @ k[b, h, j]
                    d = v[h] @ p
                    out[b, h, i, j] = (a + bb + c + d) / math.sqrt(D)
    return out


@pytest.mark.parametrize("tq,tk", [(5, 5), (2, 6), (1, 4)])
def test_scores_match_the_four_terms(tq: int, tk: int) -> None:
    torch.manual_seed(0)
    mod = XLRelative(DM, H, D).double()
    q, k = torch.randn(B, H, tq, D, dtype=torch.float64), torch.randn(B, H, tk, D, dtype=torch.float64)
    off = tk - tq
    pos = torch.arange(off, off + tq)
    want = loop_scores(mod, q, k, pos.tolist())
    scale = 1 / math.sqrt(D)
    content = q @ k.transpose(-1, -2) * scale
    got = content + mod.bias(q, k, pos, causal=True, scale=scale, q_offset=off)  # the rel_shift path
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    got = content + mod.bias(q, k, pos[None].expand(B, tq), causal=True, scale=scale)  # the gather path (cache slots)
    torch.testing.assert_close(got, want, atol=1e-10, rtol=0)


def test_grouped_keys_are_repeated_per_query_head() -> None:
    torch.manual_seed(1)
    mod = XLRelative(DM, 4, D).double()
    q, k = torch.randn(1, 4, 3, D, dtype=torch.float64), torch.randn(1, 2, 3, D, dtype=torch.float64)
    pos = torch.arange(3)
    grouped = mod.bias(q, k, pos, causal=True, scale=1.0, q_offset=0)
    full = mod.bias(q, k.repeat_interleave(2, dim=1), pos, causal=True, scale=1.0, q_offset=0)
    torch.testing.assert_close(grouped, full)
