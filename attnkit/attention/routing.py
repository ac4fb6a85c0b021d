"""Routing attention (Roy et al. 2021, "Efficient Content-Based Sparse Attention with Routing Transformers").

Queries and keys are routed to the nearest of ``n_clusters`` centroids (section 4.1: unit-norm
vectors, nearest by dot product), and each query attends only to the keys routed to its own
cluster (and, with ``causal``, not after it):

    allowed_ij = [argmax_c mu_c . q_i/|q_i|  ==  argmax_c mu_c . k_j/|k_j|]

The centroids are online k-means (section 4.1, eq. (12)): in training mode each call moves
them by an exponential moving average, ``mu_c <- decay mu_c + (1 - decay) / 2 (mean of the
queries routed to c + mean of the keys routed to c)``, per head, then renormalises them to
unit length. Deviations, said here: eq. (12) adds sums, we add means (so the step does not
grow with the batch) and renormalise; the paper's balanced top-k routing (every cluster takes
the same number of queries) is not used, so clusters may differ in size; a cluster that gets
nothing keeps its centroid. The update uses the inputs of the forward pass before attention.

Paths: the reference builds the ``(T, T)`` cluster mask (``need_weights``, general masks, bias).
The fast path sorts queries and keys by cluster, cuts the sorted queries into chunks of
``chunk`` and gives each chunk the contiguous run of sorted keys whose clusters it spans:
memory O(T * (chunk + largest cluster)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.attention.base import AttentionKernel
from attnkit.attention.registry import register


@register("routing")
class RoutingAttention(AttentionKernel):
    """Softmax attention within k-means clusters of the queries and keys.

    Args:
        n_heads: heads (one set of centroids each).
        head_dim: size of a query/key.
        n_clusters: k of k-means.
        decay: EMA decay of the centroid update (the paper's lambda).
        chunk: sorted queries per chunk on the fast path.
        seed: seed of the initial centroids.
        dropout: dropout on the attention weights (training only).
    """

    def __init__(
        self, n_heads: int = 1, head_dim: int = 64, n_clusters: int = 8, decay: float = 0.999, chunk: int = 128, seed: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(dropout)
        for name, value in (("n_heads", n_heads), ("head_dim", head_dim), ("n_clusters", n_clusters), ("chunk", chunk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay={decay!r} must be in [0, 1)")
        self.n_clusters, self.decay, self.chunk = n_clusters, decay, chunk
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("centroids", F.normalize(torch.randn(n_heads, n_clusters, head_dim, generator=gen), dim=-1))

    # -- routing --------------------------------------------------------------------------------
    def clusters(self, x: Tensor) -> Tensor:
        """The cluster of every query or key ``(B, H, T, D)``: ``(B, H, T)``."""
        if x.shape[1] != self.centroids.shape[0] or x.shape[-1] != self.centroids.shape[-1]:
            raise ValueError(
                f"routing has centroids for {self.centroids.shape[0]} heads of size {self.centroids.shape[-1]}, "
                f"got {x.shape[1]} heads of size {x.shape[-1]}"
            )
        xn = F.normalize(x.detach().float(), dim=-1)
        return torch.einsum("bhtd,hcd->bhtc", xn, self.centroids.float()).argmax(-1)

    @torch.no_grad()
    def update(self, q: Tensor, k: Tensor) -> None:
        """One EMA step of the centroids towards the means of the queries and keys routed to them."""
        new = []
        for x in (q, k):
            xn = F.normalize(x.detach().float(), dim=-1)
            onehot = F.one_hot(self.clusters(x), self.n_clusters).float()  # (B, H, T, C)
            total = torch.einsum("bhtc,bhtd->hcd", onehot, xn)
            count = onehot.sum(dim=(0, 2))[..., None]  # (H, C, 1)
            new.append((total / count.clamp(min=1), count > 0))
        (mq, hq), (mk, hk) = new
        mean = torch.where(hq & hk, (mq + mk) / 2, torch.where(hq, mq, mk))
        moved = self.decay * self.centroids + (1 - self.decay) * mean.to(self.centroids.dtype)
        self.centroids.copy_(torch.where(hq | hk, F.normalize(moved, dim=-1), self.centroids))

    def _scale(self, d: int) -> float:
        return 1.0 / math.sqrt(d)

    def _route(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        cq, ck = self.clusters(q), self.clusters(k)  # routed before the update, as the forward pass sees them
        if self.training:
            self.update(q, k)
        return cq, ck

    # -- reference path ----------------------------------------------------------------------
    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return torch.matmul(q, k.transpose(-2, -1)) * self._scale(q.shape[-1])

    def weights(self, q: Tensor, k: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None, causal: bool = False) -> Tensor:
        cq, ck = self._route(q, k)
        same = cq[..., :, None] == ck[..., None, :]  # (B, H, Tq, Tk)
        return super().weights(q, k, mask=same if mask is None else mask & same, bias=bias, causal=causal)

    # -- fast path -----------------------------------------------------------------------------
    def fast(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None, causal: bool) -> Tensor | None:
        if bias is not None or (mask is not None and not (mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1)):
            return None
        if q.shape[-2] == 0 or k.shape[-2] == 0:
            return q.new_zeros(*q.shape[:-1], v.shape[-1])
        cq, ck = self._route(q, k)
        (b, h, tq, d), tk, dv = q.shape, k.shape[-2], v.shape[-1]
        c, offset = self.chunk, tk - tq
        n = -(-tq // c)
        ctype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        pos_q, pos_k = torch.arange(tq, device=q.device), torch.arange(tk, device=q.device)
        q_order = torch.argsort(cq * tq + pos_q, dim=-1)  # (B, H, Tq): by cluster, then position
        k_order = torch.argsort(ck * tk + pos_k, dim=-1)
        sq_c = F.pad(cq.gather(-1, q_order), (0, n * c - tq), value=-1).view(b, h, n, c)  # sorted clusters, -1 = padding
        sk_c = ck.gather(-1, k_order)  # (B, H, Tk)
        # Each chunk of sorted queries spans clusters lo..hi: their keys are one run of the sorted keys.
        lo = torch.where(sq_c >= 0, sq_c, self.n_clusters).amin(-1)  # (B, H, N)
        hi = sq_c.amax(-1)
        start = torch.searchsorted(sk_c, lo.contiguous())  # first sorted key of cluster lo
        stop = torch.searchsorted(sk_c, hi.contiguous(), right=True)  # past the last key of cluster hi
        width = max(int((stop - start).clamp(min=0).max()), 1)
        kidx = start[..., None] + torch.arange(width, device=q.device)  # (B, H, N, W) in sorted order
        valid = kidx < stop[..., None]
        kidx = kidx.clamp(max=tk - 1)
        kpos = k_order.gather(-1, kidx.view(b, h, -1)).view(b, h, n, width)  # original key positions
        qpos = F.pad(q_order, (0, n * c - tq)).view(b, h, n, c)
        sq = q.gather(2, qpos.view(b, h, -1, 1).expand(-1, -1, -1, d)).view(b, h, n, c, d)
        sk = k.gather(2, kpos.view(b, h, -1, 1).expand(-1, -1, -1, d)).view(b, h, n, width, d)
        sv = v.gather(2, kpos.view(b, h, -1, 1).expand(-1, -1, -1, dv)).view(b, h, n, width, dv)
        kc = ck.gather(-1, kpos.view(b, h, -1)).view(b, h, n, width)
        allowed = valid[..., None, :] & (kc[..., None, :] == sq_c[..., :, None])  # (B, H, N, C, W)
        if causal:
            allowed = allowed & (kpos[..., None, :] <= qpos[..., :, None] + offset)
        if mask is not None:
            keep = mask[:, 0, 0, :].expand(b, tk)  # (B, Tk)
            allowed = allowed & keep.gather(1, kpos.view(b, -1)).view(b, -1, n, width)[..., None, :]
        s = torch.matmul(sq, sk.transpose(-2, -1)).to(ctype) * self._scale(d)  # (B, H, N, C, W)
        s = s.masked_fill(~allowed, float("-inf"))
        m = s.detach().amax(-1, keepdim=True)
        e = torch.exp(s - torch.where(torch.isfinite(m), m, torch.zeros_like(m)))
        z = e.sum(-1, keepdim=True)
        if self.dropout and self.training:
            e = F.dropout(e, self.dropout, True)
        out = torch.matmul(e, sv.to(ctype)) / torch.where(z > 0, z, torch.ones_like(z))  # (B, H, N, C, Dv)
        out = out.view(b, h, n * c, dv)[:, :, :tq]
        undo = q_order.argsort(dim=-1)
        return out.gather(2, undo[..., None].expand(-1, -1, -1, dv)).to(v.dtype)

    def extra_repr(self) -> str:
        return f"n_clusters={self.n_clusters}, decay={self.decay}, chunk={self.chunk}, dropout={self.dropout}"
