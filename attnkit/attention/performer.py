"""Performer attention: FAVOR+ positive orthogonal random features (Choromanski et al. 2021,
"Rethinking Attention with Performers", section 2.3, Lemma 1 and section 2.4).

    phi(x) = exp(W x - |x|^2 / 2) / sqrt(m),   x = input * d^(-1/4),
    E[phi(q)^T phi(k)] = exp(q^T k / sqrt(d))   (the softmax kernel),

with the m rows of W Gaussian, orthogonal in blocks of d (section 2.4) and rescaled to the
norms of independent Gaussian vectors. Attention is then linear attention with this feature
map (:class:`attnkit.attention.linear.LinearAttention`): O(n m d) non-causal, prefix sums
when causal, a fixed-size recurrent state for decoding.

Numerical stabilisers (as in the paper's code release, written here from the formula): the
query features of each row and the key features of each (batch, head) are divided by
``exp(max)`` of their exponents; each factor is common to a whole row of weights or to all
keys, so it cancels in the normalisation. The decode step skips the key stabiliser (one
token has no "all keys"), which gives the same result up to rounding.
The features are drawn once from ``seed`` (the paper redraws them during training).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from attnkit.attention.linear import LinearAttention
from attnkit.attention.registry import register


def orthogonal_gaussian(m: int, d: int, generator: torch.Generator) -> Tensor:
    """``(m, d)``: blocks of d orthogonal rows (QR of a Gaussian matrix), each row rescaled to the
    norm of an independent ``N(0, I_d)`` vector, so every row is marginally ``N(0, I_d)``."""
    blocks = []
    for _ in range(-(-m // d)):
        qr, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
        qr = qr * torch.sign(torch.diagonal(r))  # fix the signs: Q is then Haar-distributed
        blocks.append(qr.T)  # rows orthonormal, each a uniformly random direction
    w = torch.cat(blocks)[:m]
    norms = torch.randn(m, d, generator=generator, dtype=torch.float64).norm(dim=1, keepdim=True)
    return (w * norms).float()


@register("performer")
class PerformerAttention(LinearAttention):
    """Linear attention with FAVOR+ features approximating softmax(QK^T / sqrt(d)) V.

    Args:
        head_dim: size of a query/key (d).
        n_features: random features m.
        seed: seed of the features.
        chunk: positions per chunk of the causal prefix sums.
        dropout: must be 0.
        compiled: on CUDA, run the fast path compiled (see :class:`LinearAttention`).
    """

    def __init__(
        self, head_dim: int = 64, n_features: int = 256, seed: int = 0, chunk: int = 64, dropout: float = 0.0, compiled: bool = True
    ) -> None:
        super().__init__(dropout, chunk, compiled)
        for name, value in (("head_dim", head_dim), ("n_features", n_features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        self.n_features = n_features
        self.register_buffer("projection", orthogonal_gaussian(n_features, head_dim, torch.Generator().manual_seed(seed)))

    def features(self, x: Tensor, is_query: bool) -> Tensor:
        if x.shape[-1] != self.projection.shape[1]:
            raise ValueError(f"performer was built for head_dim={self.projection.shape[1]}, got queries/keys of size {x.shape[-1]}")
        x = x * x.shape[-1] ** -0.25
        wx = torch.matmul(x, self.projection.to(x.dtype).T)  # (..., M)
        half_norm = (x * x).sum(-1, keepdim=True) / 2
        if is_query:
            stab = wx.detach().amax(-1, keepdim=True)  # per query row
        elif x.dim() >= 4:
            stab = wx.detach().amax(dim=(-2, -1), keepdim=True)  # per (batch, head), over all keys
        else:
            stab = torch.zeros_like(half_norm)
        return torch.exp(wx - half_norm - stab) / math.sqrt(self.n_features)

    def init_state(self, batch: int, n_heads: int, head_dim: int | None = None, v_dim: int | None = None, *, device=None, dtype=None):
        """An empty decoding state over the ``n_features`` features (``head_dim`` is not needed)."""
        return super().init_state(batch, n_heads, self.n_features, v_dim if v_dim is not None else head_dim, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"n_features={self.n_features}, chunk={self.chunk}"
