"""LSH attention (Kitaev et al. 2020, "Reformer: The Efficient Transformer", section 2).

For each of ``n_hashes`` rounds r:

1. hash every position by a random rotation of its unit-normalised key,
   ``h(x) = argmax([x R_r ; -x R_r])`` with ``R_r`` of shape ``(d, n_buckets / 2)`` (section 2, "LSH");
2. sort positions by (bucket, position) and cut the sorted sequence into chunks of ``chunk``;
3. each query attends to the keys of its own and the previous chunk that are in its bucket
   (and, with ``causal``, not after it), never to itself unless nothing else is visible
   (section 2, "shared-QK": a token's score with itself dominates);
4. the rounds' outputs are combined with weights ``softmax_r(lse_r)``, where ``lse_r`` is the
   log-sum-exp of the query's scores in round r (appendix, "multi-round LSH attention").

Deviations, said here: keys are unit-normalised (as the paper's shared-QK keys are) but taken
from ``k``; pass ``k = q`` for the paper's shared-QK attention. Positions are hashed by their
key, and the query at a position is in that position's bucket. The first chunk does not look
back to the last one. The rotations are drawn once from ``seed`` (the paper draws new ones each
step). A key counted in several rounds is not de-duplicated.

With ``n_buckets=1`` and ``chunk >= T`` every round is full attention (minus self), so the
result equals full attention for any number of rounds. The chunked path holds
``(T / chunk) x chunk x 2 chunk`` scores per round; ``need_weights``, general masks and
biases use the dense reference path, which builds the same visibility as ``(T, T)`` masks.

On CUDA (``backend="auto"``) the chunked path runs under ``torch.compile``, which fuses each
round's masking and softmax. Scores and softmax are float32 for half-precision inputs, the
weights are cast back to the input dtype for the product with V (as fused attention kernels
do), and the sorts backpropagate by gathering with the inverse permutation (:func:`~attnkit.attention.gather.gather_rows`).
``backend="flex"`` runs every round in one FlexAttention call
over the sorted sequences, rounds stacked on the batch axis: a block mask fixed by the chunk
size (own and previous chunk) built once per length, and a score modification that keeps keys
of the query's bucket and drops itself, padding and (causal) later positions. A row left with
no key is the self-only case: its output is its own value and its log-sum-exp its own score,
as the chunked path gives. It is exact but no faster than the compiled
chunked path (the score modification reads bucket and position tables for every score).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.attention import flex
from attnkit.attention.gather import gather_rows, inverse_index
from attnkit.attention.base import AttentionKernel
from attnkit.attention.registry import register


# Bounds on the hashing parameters: each round stores a bucket for every (batch, head, position)
# and a rotation of shape (d, n_buckets / 2), so these caps keep one layer's tables small.
MAX_HASHES = 64
MAX_BUCKETS = 1 << 16
MAX_CHUNK = 1 << 20


@register("lsh")
class LSHAttention(AttentionKernel):
    """Reformer's multi-round LSH attention.

    Args:
        n_hashes: hashing rounds.
        n_buckets: buckets per round; 1 or an even number.
        chunk: positions per chunk of the sorted sequence.
        seed: seed of the random rotations.
        dropout: dropout on the attention weights (training only).
        backend: ``"auto"`` (the chunked path, compiled on CUDA), ``"chunked"`` (eager) or
            ``"flex"`` (FlexAttention, CUDA only).
    """

    def __init__(
        self, n_hashes: int = 4, n_buckets: int = 8, chunk: int = 64, seed: int = 0, dropout: float = 0.0, backend: str = "auto"
    ) -> None:
        super().__init__(dropout)
        if backend not in ("auto", "chunked", "flex"):
            raise ValueError(f"backend={backend!r}; choose one of auto, chunked, flex")
        self.backend = backend
        self._rotations: dict[tuple, Tensor] = {}
        for name, value in (("n_hashes", n_hashes), ("n_buckets", n_buckets), ("chunk", chunk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        for name, value, limit in (("n_hashes", n_hashes, MAX_HASHES), ("n_buckets", n_buckets, MAX_BUCKETS), ("chunk", chunk, MAX_CHUNK)):
            if value > limit:
                raise ValueError(f"{name}={value} is above the limit of {limit} (every round keeps a bucket per position)")
        if n_buckets > 1 and n_buckets % 2:
            raise ValueError(f"n_buckets={n_buckets} must be 1 or even (buckets are argmax over [xR; -xR])")
        self.n_hashes, self.n_buckets, self.chunk, self.seed = n_hashes, n_buckets, chunk, seed

    # -- hashing -----------------------------------------------------------------------------
    def rotations(self, d: int, device: torch.device) -> Tensor:
        """The random rotations ``(n_hashes, d, n_buckets / 2)``, drawn from ``seed`` once per (d, device)."""
        key = (d, str(device))
        if key not in self._rotations:
            gen = torch.Generator().manual_seed(self.seed)
            with torch.inference_mode(False):
                self._rotations[key] = torch.randn(self.n_hashes, d, self.n_buckets // 2, generator=gen).to(device)
        return self._rotations[key]

    def buckets(self, k: Tensor, rot: Tensor | None = None) -> Tensor:
        """Bucket of every position in every round, ``(n_hashes, B, H, T)``, from the keys ``(B, H, T, D)``."""
        b, h, t, d = k.shape
        if self.n_buckets == 1:
            return torch.zeros(self.n_hashes, b, h, t, dtype=torch.long, device=k.device)
        rot = self.rotations(d, k.device) if rot is None else rot
        x = torch.einsum("bhtd,rdn->rbhtn", F.normalize(k.detach().float(), dim=-1), rot)
        return torch.cat([x, -x], dim=-1).argmax(dim=-1)  # (R, B, H, T)

    def _check(self, q: Tensor, k: Tensor) -> None:
        if q.shape[-2] != k.shape[-2]:
            raise ValueError(f"lsh is self-attention: it needs as many queries as keys, got {q.shape[-2]} and {k.shape[-2]}")

    def _scale(self, d: int) -> float:
        return 1.0 / math.sqrt(d)

    # -- the reference path: dense (T, T) visibility per round ------------------------------------
    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return torch.matmul(q, _unit(k).transpose(-2, -1)) * self._scale(q.shape[-1])  # (B, H, T, T)

    def visible(self, k: Tensor, causal: bool) -> Tensor:
        """Which keys each query sees in each round before self-exclusion, ``(R, B, H, T, T)``."""
        t = k.shape[-2]
        bk = self.buckets(k)  # (R, B, H, T)
        pos = torch.arange(t, device=k.device)
        rank = torch.argsort(bk * t + pos, dim=-1).argsort(dim=-1)  # place of each position in sorted order
        ch = rank // self.chunk
        same_bucket = bk[..., :, None] == bk[..., None, :]
        near = (ch[..., None, :] == ch[..., :, None]) | (ch[..., None, :] == ch[..., :, None] - 1)
        vis = same_bucket & near
        if causal:
            vis = vis & (pos[None, :] <= pos[:, None])
        return vis

    def weights(self, q: Tensor, k: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None, causal: bool = False) -> Tensor:
        self._check(q, k)
        s = self.scores(q, k)  # (B, H, T, T)
        s = s.float() if s.dtype in (torch.float16, torch.bfloat16) else s
        if bias is not None:
            s = s + bias
        vis = self.visible(k, causal)  # (R, B, H, T, T)
        if mask is not None:
            vis = vis & mask
        eye = torch.eye(q.shape[-2], dtype=torch.bool, device=q.device)
        others = vis & ~eye
        vis = torch.where(others.any(-1, keepdim=True), others, vis)  # self only if nothing else
        w, lse = _softmax_lse(s.expand_as(vis), vis)  # (R, B, H, T, T), (R, B, H, T, 1)
        return (w * _round_weights(lse)).sum(0).to(q.dtype)  # (B, H, T, T)

    # -- the chunked path ------------------------------------------------------------------------
    def fast(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None, causal: bool) -> Tensor | None:
        self._check(q, k)
        if q.shape[-2] == 0:
            return q.new_zeros(*q.shape[:-1], v.shape[-1])
        if bias is not None or (mask is not None and not (mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1)):
            return None  # the dense reference path
        key_keep = flex.key_padding(mask, q.shape[0], k.shape[-2])  # (B, T) or None
        flex_ok = (mask is None or key_keep is not None) and not (self.dropout and self.training)
        if self.backend == "flex":
            if not flex_ok or not flex.available(q):
                raise ValueError("lsh: backend='flex' needs CUDA tensors, a power-of-two head dim >= 16, no dropout "
                                 "and no mask but key padding (B, 1, 1, T); use backend='auto'")
            return self._flex(q, k, v, key_keep, causal)
        keep = None if mask is None else mask[:, 0, 0, :].expand(q.shape[0], q.shape[-2])  # (B, T)
        rot = None if self.n_buckets == 1 else self.rotations(q.shape[-1], q.device)
        if q.is_cuda and self.backend == "auto" and not torch.compiler.is_compiling():
            return _compiled_chunked(self, q, k, v, keep, causal, rot)
        return self._chunked(q, k, v, keep, causal, rot)

    def _chunked(self, q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None, causal: bool, rot: Tensor | None) -> Tensor:
        """Sort, chunk, attend to own and previous chunk, unsort; rounds combined by their lse."""
        b, h, t, d = q.shape
        c = self.chunk
        n = -(-t // c)
        pad = n * c - t
        ctype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        kn = _unit(k)
        outs, lses = [], []
        pos = torch.arange(t, device=q.device)
        bks = self.buckets(k, rot)  # (R, B, H, T)
        orders = _sort_order(bks, pos, self.n_buckets)  # every round in one sort
        for bk, order in zip(bks, orders):  # (B, H, T) per round
            undo = inverse_index(order, order.shape[-1])

            def sort(x: Tensor) -> Tensor:  # (B, H, T, D) in sorted order, padded to N * C
                return F.pad(gather_rows(x, order, undo), (0, 0, 0, pad))

            sq, sk, sv = sort(q), sort(kn), sort(v)  # (B, H, N*C, D)
            sp = F.pad(order, (0, pad), value=-1)  # (B, H, N*C): position of each slot, -1 on padding
            sb = F.pad(bk.gather(2, order), (0, pad), value=-1)  # bucket of each slot
            sq, sk, sv = (x.reshape(b, h, n, c, x.shape[-1]) for x in (sq, sk, sv))  # (B, H, N, C, D)
            sp, sb = sp.reshape(b, h, n, c), sb.reshape(b, h, n, c)
            kk = torch.cat([sk, _prev(sk, 0)], dim=3)  # (B, H, N, 2C, D): own chunk, then the previous one
            vv = torch.cat([sv, _prev(sv, 0)], dim=3)
            kp = torch.cat([sp, _prev(sp, -1)], dim=3)  # (B, H, N, 2C)
            kb = torch.cat([sb, _prev(sb, -1)], dim=3)
            s = torch.einsum("bhncd,bhnkd->bhnck", sq, kk).to(ctype) * self._scale(d)  # (B, H, N, C, 2C)
            vis = (kb[..., None, :] == sb[..., :, None]) & (kp[..., None, :] >= 0)
            if causal:
                vis = vis & (kp[..., None, :] <= sp[..., :, None])
            if keep is not None:
                kpad = keep.gather(1, kp.clamp(min=0).reshape(b, -1)).reshape(kp.shape)  # (B, H, N, 2C) (H = 1 broadcasts)
                vis = vis & kpad[..., None, :]
            others = vis & (kp[..., None, :] != sp[..., :, None])
            vis = torch.where(others.any(-1, keepdim=True), others, vis)
            p, lse = _softmax_lse(s, vis)  # (B, H, N, C, 2C), (B, H, N, C, 1)
            if self.dropout and self.training:
                p = F.dropout(p, self.dropout, True)
            # weights in the input's precision for the product with V, as fused attention kernels do
            o = torch.einsum("bhnck,bhnke->bhnce", p.to(vv.dtype), vv).reshape(b, h, n * c, -1)[:, :, :t]  # sorted order
            outs.append(gather_rows(o, undo, order))
            lses.append(gather_rows(lse.reshape(b, h, n * c, 1)[:, :, :t], undo, order))
        lse_all = torch.stack(lses)  # (R, B, H, T, 1)
        return (torch.stack(outs).to(ctype) * _round_weights(lse_all)).sum(0).to(v.dtype)

    def _flex(self, q: Tensor, k: Tensor, v: Tensor, key_keep: Tensor | None, causal: bool) -> Tensor:
        """Every round in one FlexAttention call over the sorted sequences (see the module docstring)."""
        b, h, t, d = q.shape
        r, c = self.n_hashes, self.chunk
        tp = -(-t // c) * c
        pad, scale = tp - t, self._scale(d)
        bk = self.buckets(k)  # (R, B, H, T)
        order = _sort_order(bk, torch.arange(t, device=q.device), self.n_buckets)  # sorted slot -> position
        undo = inverse_index(order, order.shape[-1])

        def sort(x: Tensor) -> Tensor:  # (B, H, T, D) -> (R * B, H, Tp, D) in each round's order
            y = x.unsqueeze(0).expand(r, -1, -1, -1, -1).gather(3, order[..., None].expand(-1, -1, -1, -1, x.shape[-1]))
            return F.pad(y, (0, 0, 0, pad)).flatten(0, 1)

        sq, sk, sv = sort(q), sort(_unit(k)), sort(v)
        sp = F.pad(order, (0, pad), value=-1).flatten(0, 1)  # (R * B, H, Tp): position of each slot, -1 = padding
        sb = F.pad(bk.gather(-1, order), (0, pad), value=-1).flatten(0, 1)  # bucket of each slot
        real = sp >= 0
        if key_keep is not None:
            kept = key_keep[None, :, None, :].expand(r, b, h, t).gather(-1, order)
            real = real & F.pad(kept, (0, pad), value=False).flatten(0, 1)

        def same_bucket(score: Tensor, bi: Tensor, hi: Tensor, qi: Tensor, kj: Tensor) -> Tensor:
            ok = (sb[bi, hi, kj] == sb[bi, hi, qi]) & (sp[bi, hi, kj] != sp[bi, hi, qi]) & real[bi, hi, kj]
            if causal:
                ok = ok & (sp[bi, hi, kj] <= sp[bi, hi, qi])
            return torch.where(ok, score, -float("inf"))

        def near(bi: Tensor, hi: Tensor, qi: Tensor, kj: Tensor) -> Tensor:  # own and previous chunk
            gap = qi // c - kj // c
            return (gap >= 0) & (gap <= 1)

        bm = flex.cached(("lsh-chunks", c), tp, tp, q.device,
                         lambda: flex.create_block_mask(near, B=None, H=None, Q_LEN=tp, KV_LEN=tp, device=q.device))
        o, lse = flex.compiled()(sq, sk, sv, score_mod=same_bucket, block_mask=bm, scale=scale, return_lse=True)
        lonely = torch.isneginf(lse) & real  # no other key: the query attends to itself
        o = torch.where(lonely[..., None], sv, o)
        lse = torch.where(lonely, (sq.float() * sk.float()).sum(-1) * scale, lse)

        def unsort(x: Tensor) -> Tensor:  # (R * B, H, Tp, E) -> (R, B, H, T, E) in position order
            x = x.unflatten(0, (r, b))[:, :, :, :t]
            return x.gather(3, undo[..., None].expand(-1, -1, -1, -1, x.shape[-1]))

        return (unsort(o).float() * _round_weights(unsort(lse[..., None]))).sum(0).to(v.dtype)

    def extra_repr(self) -> str:
        return f"n_hashes={self.n_hashes}, n_buckets={self.n_buckets}, chunk={self.chunk}, seed={self.seed}, dropout={self.dropout}, backend={self.backend!r}"


_COMPILED: list = []


def _compiled_chunked(kernel: LSHAttention, *args) -> Tensor:
    """:meth:`LSHAttention._chunked` under ``torch.compile`` (CUDA): the sorting, masking and
    softmax of every round fuse into a few kernels instead of dozens of passes over memory."""
    if not _COMPILED:
        _COMPILED.append(torch.compile(LSHAttention._chunked))
    return _COMPILED[0](kernel, *args)


def _sort_order(buckets: Tensor, pos: Tensor, n_buckets: int) -> Tensor:
    """Positions sorted by (bucket, position) along the last axis; 32-bit sort keys where they fit."""
    t = pos.shape[0]
    key = buckets * t + pos  # < n_buckets * t
    return torch.argsort(key.to(torch.int32) if n_buckets * t < 2**31 else key, dim=-1)


def _unit(k: Tensor) -> Tensor:
    """Unit-normalised keys, normalised in float32 for half-precision inputs."""
    return F.normalize(k.float() if k.dtype in (torch.float16, torch.bfloat16) else k, dim=-1).to(k.dtype)


def _prev(x: Tensor, fill: float) -> Tensor:
    """The previous chunk's entries along dim 2 (the chunk axis); the first chunk gets ``fill``."""
    first = torch.full_like(x[:, :, :1], fill)
    return torch.cat([first, x[:, :, :-1]], dim=2)


def _softmax_lse(s: Tensor, vis: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax over the visible entries of the last axis and its log-sum-exp; rows that see
    nothing get zero weights and ``lse = -inf`` (with finite gradients)."""
    s = s.masked_fill(~vis, float("-inf"))
    m = s.detach().amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(s - m)
    z = e.sum(-1, keepdim=True)
    z_safe = torch.where(z > 0, z, torch.ones_like(z))
    lse = torch.where(z > 0, m + torch.log(z_safe), torch.full_like(z, float("-inf")))
    return e / z_safe, lse


def _round_weights(lse: Tensor) -> Tensor:
    """softmax over rounds (dim 0) of the per-round log-sum-exps; rounds with nothing visible weigh 0."""
    m = lse.amax(0, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(lse - m)
    return e / torch.where(e.sum(0, keepdim=True) > 0, e.sum(0, keepdim=True), torch.ones_like(m))
