"""Transformer-XL's relative attention (Dai et al. 2019, section 3.3).

The score of query i and key j is the sum of four terms (eq. in section 3.3):

    A_ij = q_i^T k_j  +  q_i^T W_R R_{i-j}  +  u^T k_j  +  v^T W_R R_{i-j}
           (a) content   (b) content-position  (c) global content  (d) global position

with R_{i-j} the sinusoid encoding of the distance (no parameters; XL's order [sin, cos]), W_R a
learned projection per layer and u, v learned vectors per head. Grouped: (q_i + u)^T k_j + (q_i + v)^T
W_R R_{i-j}. The kernel computes q_i^T k_j; this module returns the other three terms, scaled like it.

The position term is the einsum R_bhlr = sum_d Q_bhld P_lrd with P_lr = W_R R_{l-r}. It is computed
without the ``(Tq, Tk, d)`` tensor P: the queries meet each distinct distance once,
BD = (Q + v) P'^T with P' the rows for the distances from the largest to the smallest, and
:func:`rel_shift` moves entry (i, r) to its key column j.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnkit.positions.base import ScoreBias, distances, repeat_kv


def rel_shift(x: Tensor, tk: int) -> Tensor:
    """Turn scores per (query i, distance column r) into scores per (query i, key j).

    ``x: (..., Tq, Tq + Tk - 1)`` has column r for the distance ``d_max - r``, with
    ``d_max = i_last - 0`` the largest query-key distance; the result is ``(..., Tq, Tk)`` with
    ``out[i, j] = x[i, j + Tq - 1 - i]``. Done as in Transformer-XL's code, by reshaping instead
    of gathering: one zero column appended, the flattened rows read with a stride one shorter.

    Args:
        x: scores per distance column.
        tk: the number of keys.

    Returns:
        The scores in key order.
    """
    *lead, tq, r = x.shape
    if r != tq + tk - 1:
        raise ValueError(f"rel_shift needs Tq + Tk - 1 = {tq + tk - 1} distance columns, got {r}")
    padded = torch.nn.functional.pad(x, (0, 1))  # (..., Tq, R + 1)
    flat = padded.reshape(*lead, tq * (r + 1))
    # row i of the result starts at i (R + 1) + (Tq - 1 - i) = (Tq - 1) + i R: a stride of R
    return flat[..., tq - 1 : tq - 1 + tq * r].reshape(*lead, tq, r)[..., :tk]


def sinusoid(d: Tensor, dim: int) -> Tensor:
    """Transformer-XL's relative encoding R_d = [sin(d w), cos(d w)], w_k = 10000^(-2k/dim): ``(..., dim)``."""
    w = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=d.device) / dim)
    angle = d.double()[..., None] * w  # float64: distances of thousands keep their phase
    return torch.cat((angle.sin(), angle.cos()), dim=-1)


class XLRelative(ScoreBias):
    """Terms (b), (c), (d) of Transformer-XL's relative attention.

    Args:
        d_model: width of the sinusoid encoding R (the model width, as in the paper).
        n_heads: heads H.
        head_dim: features per head d.
    """

    content = True

    def __init__(self, d_model: int, n_heads: int, head_dim: int) -> None:
        super().__init__()
        if d_model % 2:
            raise ValueError(f"d_model={d_model} must be even for the sinusoid encoding")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, head_dim
        self.r_proj = nn.Linear(d_model, n_heads * head_dim, bias=False)  # W_R
        self.u = nn.Parameter(torch.randn(n_heads, head_dim) * 0.02)
        self.v = nn.Parameter(torch.randn(n_heads, head_dim) * 0.02)

    def positions(self, d: Tensor) -> Tensor:
        """P_d = W_R R_d per head: ``(..., H, d_head)`` for distances ``d``."""
        return self.r_proj(sinusoid(d, self.d_model).to(self.r_proj.weight.dtype)).unflatten(-1, (self.n_heads, self.head_dim))

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, *, causal: bool, scale: float, q_offset: int | None = None) -> Tensor:
        b, h, tq, _ = q.shape
        tk = k.shape[-2]
        ac = torch.einsum("hd,bhjd->bhj", self.u.to(q.dtype), repeat_kv(k, h))[:, :, None, :]  # (c): (B, H, 1, Tk)
        qv = q + self.v.to(q.dtype)[:, None, :]  # (B, H, Tq, d)
        if q_offset is not None:
            d = torch.arange(q_offset + tq - 1, q_offset - tk, -1, device=q.device)  # largest distance first: (Tq + Tk - 1,)
            p = self.positions(d).to(q.dtype)  # (R, H, d)
            bd = rel_shift(torch.einsum("bhld,rhd->bhlr", qv, p), tk)  # (b) + (d): (B, H, Tq, Tk)
        else:  # arbitrary query positions (a static cache's slots): gather the distances directly
            dist = distances(q_pos, tk)  # (..., Tq, Tk)
            lo = -(tk - 1)
            span = torch.arange(lo, tk, device=q.device)  # every i - j of queries among the keys
            p = self.positions(span).to(q.dtype)  # (S, H, d)
            idx = (dist - lo).clamp(0, span.numel() - 1)
            idx = idx.expand(b, h, tq, tk) if idx.dim() == 2 else idx[:, None].expand(b, h, tq, tk)
            bd = torch.einsum("bhld,shd->bhls", qv, p).gather(-1, idx)
        return (ac + bd) * scale
