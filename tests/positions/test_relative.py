"""BERT's relative_key / relative_key_query scores against plain loops over Shaw et al. 2018, eq. (5) and
Huang et al. 2020, section 3.3 (method 4), with clipped distances."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.positions.relative import RelativeKey

B, H, D = 2, 3, 4


def loop_scores(q: torch.Tensor, k: torch.Tensor, table: torch.Tensor, q_pos: list[int], m: int, query: bool) -> torch.Tensor:
    out = torch.zeros(q.shape[0], q.shape[1], q.shape[2], k.shape[2], dtype=torch.float64)
    for b in range(q.shape[0]):
        for h in range(q.shape[1]):
            for i, pi in enumerate(q_pos):
                for j in range(k.shape[2]):
                    a = table[max(-(m - 1), min(m - 1, pi - j)) + m - 1]  # a_ij = w_clip(i - j)
                    e = q[b, h, i] @ k[b, h, j] + q[b, h, i] @ a + (k[b, h, j] @ a if query else 0.0)
                    out[b, h, i, j] = e / math.sqrt(q.shape[-1])
    return out


@pytest.mark.parametrize("query", [False, True])
@pytest.mark.parametrize("tq,tk,off,m", [(6, 6, 0, 8), (2, 9, 7, 8), (7, 7, 0, 3)])
def test_scores_match_the_equations(query: bool, tq: int, tk: int, off: int, m: int) -> None:
    torch.manual_seed(0)
    mod = RelativeKey(D, max_distance=m, query=query).double()
    q, k = torch.randn(B, H, tq, D, dtype=torch.float64), torch.randn(B, H, tk, D, dtype=torch.float64)
    pos = torch.arange(off, off + tq)
    want = loop_scores(q, k, mod.distance_embedding.weight.detach(), pos.tolist(), m, query)
    scale = 1 / math.sqrt(D)
    for q_offset in (off, None):  # the row-range path and the whole-table path
        got = q @ k.transpose(-1, -2) * scale + mod.bias(q, k, pos, causal=False, scale=scale, q_offset=q_offset)
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
