"""Adaptive attention span (Sukhbaatar et al. 2019, "Adaptive Attention Span in Transformers", section 3).

Each head h learns its span z_h in [0, S] (``max_span`` S); the attention weight of query t on key r
at distance x = t - r is multiplied by the soft ramp mask (eq. 2, ramp ``R``)

    m_z(x) = clamp((R + z - x) / R, 0, 1)

and renormalised (eq. 3): a_tr = m_z(t - r) exp(s_tr) / sum_q m_z(t - q) exp(s_tq). That is the
softmax of the scores plus log m_z(x), which is how it is computed here: the scaled dot-product
kernel takes it as a score bias (SDPA on CPU and GPU); log m = -inf where m = 0, and the
gradient of z flows through the keys on the ramp (0 < m < 1) exactly as through eq. 3.
z_h = S * clamp(p_h, 0, 1) with a parameter p_h per head, as in the paper. The clamp alone would
stop learning for good: once an update (the penalty's, or the loss's early on) takes p_h below 0, the
clamp's gradient there is 0 and z_h stays at 0 for the rest of training. So p_h is projected back onto
[0, 1] before each training forward (projected gradient descent, which is how the paper's span is kept
in range): at the boundary the clamp passes the gradient, and a span at 0 grows again when the loss
asks for it. The span's L1 penalty (section 3) is :func:`span_penalty`, lambda sum_i z_i over every
head i of the model, added to the task's per-token mean loss (lambda = 2e-6 in the paper's
character-level runs).

Positions: a query's position is the last key it may see (causal self-attention, from the
bottom-right aligned causal mask, a Transformer-XL memory, or the mask of a cache's slots); with
neither a mask nor ``causal``, query i of Tq sits at key Tk - Tq + i. Keys that no query's span
reaches (a long memory and short spans) are dropped before the scores are computed, which is the
paper's saving in memory and time.

Two implementations compute the same eq. 3 (``implementation``):

* ``sdpa``: the reference, and the default on CPU. log m_z(x) is built as a dense ``(B or 1, H, Tq, Tk)``
  bias for SDPA; only keys beyond the *largest* head's span are dropped, and only without a mask.
* ``flex``: FlexAttention (:mod:`attnkit.attention.flex`). The ``score_mod`` adds log m_z(t - r) for its head,
  reading the span tensor z it captures, so the gradient of z (and of a positional ``bias``, read the same
  way) flows through FlexAttention's backward. A per-head block mask (:func:`span_blocks`) lists, for each
  head and block of queries, the blocks of keys that hold at least one key the head reaches (distance below
  z_h + R, and allowed by the causal mask): a head with a short span skips the blocks further back. The
  table is computed on the device from z, without reading the spans on the host: in training it is rebuilt
  at every call (the spans move with every step), in evaluation it is kept while the span parameter is not
  written to (its version counter). ``auto`` takes it where it applies: CUDA, at least
  :data:`attnkit.attention.flex.MIN_QUERIES` queries, no mask other than the causal one (query i at key
  Tk - Tq + i, as with a Transformer-XL memory), no attention weights asked for, and no attention dropout in
  training (FlexAttention has none).

Both implementations take the ramp's log from :func:`log_ramp`, so they agree on the one-sided gradient
where a distance lands exactly on z or on z + R. Both compute the ramp from integer distances and z in float32
whatever the autocast or score dtype (bfloat16 holds integers exactly only up to 256), and only the resulting
bias is cast to the scores' dtype: a span reaching every key (z >= the largest distance) has m = 1 on all of them
and no gradient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnkit.attention import flex
from attnkit.attention.base import AttentionKernel
from attnkit.attention.masks import combine
from attnkit.attention.registry import register
from attnkit.attention.scaled_dot import ScaledDotProduct

try:  # PyTorch >= 2.5
    from torch.nn.attention.flex_attention import BlockMask
except ImportError:  # pragma: no cover - old PyTorch
    BlockMask = None  # type: ignore[assignment,misc]

IMPLEMENTATIONS = ("auto", "sdpa", "flex")


def log_ramp(r: Tensor) -> Tensor:
    """log clamp(r, 0, 1) of the ramp value r = (R + z - x) / R: -inf for r <= 0, no NaN in the gradient.

    The gradient flows for 0 < r <= 1 (at r = 1 as the clamp's own backward passes it), written with
    ``where`` so that eager autograd and FlexAttention's traced backward take the same side at the ends."""
    inside = r > 0
    one = torch.ones_like(r)
    return torch.where(inside, torch.where(r > 1, one, torch.where(inside, r, one)).log(), torch.full_like(r, float("-inf")))


def span_blocks(reach: Tensor, tq: int, tk: int, causal: bool, tiles: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Which key blocks each head's queries reach: ``(needed, full)``, both boolean ``(H, Tq / Bq, Tk / Bk)``.

    Query i sits at key Tk - Tq + i. A block of keys is needed when some pair (t, r) in it has
    t - r < ``reach`` (z_h + R: m_z(t - r) > 0) and, with ``causal``, r <= t; it is full when every pair
    passes the causal test and the block lies inside both lengths (the ``mask_mod`` may then be skipped;
    the ``score_mod`` still applies the ramp).

    Args:
        reach: ``(H,)`` z + R per head.
        tq: queries Tq.
        tk: keys Tk.
        causal: the bottom-right aligned causal mask applies.
        tiles: (query, key) block size.
    """
    bq, bk = tiles
    dev = reach.device
    qb, kb = torch.arange(-(-tq // bq), device=dev), torch.arange(-(-tk // bk), device=dev)
    t_lo, t_hi = tk - tq + qb * bq, tk - tq + ((qb + 1) * bq).clamp(max=tq) - 1  # (nq,) first and last query position
    r_lo, r_hi = kb * bk, ((kb + 1) * bk).clamp(max=tk) - 1  # (nk,) first and last key
    needed = (t_lo[:, None] - r_hi[None, :])[None] < reach[:, None, None]  # (H, nq, nk): the closest pair is in reach
    inside = (((qb + 1) * bq <= tq)[:, None] & ((kb + 1) * bk <= tk)[None, :])  # (nq, nk)
    if causal:
        needed = needed & (r_lo[None, :] <= t_hi[:, None])[None]
        inside = inside & (r_hi[None, :] <= t_lo[:, None])
    return needed, needed & inside[None]


def _ordered(table: Tensor) -> tuple[Tensor, Tensor]:
    """A boolean block table ``(H, nq, nk)`` as FlexAttention's ``(count, indices)``, ``(1, H, nq)`` and ``(1, H, nq, nk)``."""
    t = table[None].to(torch.int32)
    return t.sum(-1).to(torch.int32), torch.argsort(t, dim=-1, descending=True, stable=True).to(torch.int32)


@register("adaptive_span")
class AdaptiveSpan(AttentionKernel):
    """Scaled dot-product attention with a learned soft span per head (eq. 2-3).

    Args:
        n_heads: heads H (one span each).
        max_span: S, the largest span.
        ramp: R, the ramp's length in positions.
        init: each span's starting value as a fraction of S.
        span_loss: lambda of the L1 penalty on the spans (:func:`span_penalty`).
        dropout: attention-weight dropout.
        scale: overrides 1/sqrt(d_k).
        backend: SDPA's kernel on CUDA.
        implementation: ``auto`` (FlexAttention with the span block mask where it applies, else SDPA),
            ``sdpa`` (the dense-bias reference) or ``flex`` (FlexAttention wherever the call allows it: no mask,
            no weights, no dropout in training; compiled on CUDA, eager elsewhere). See the module docstring.
        flex_tiles: FlexAttention's (query, key) block size; a smaller key block lets a short span skip more.
    """

    def __init__(self, n_heads: int = 1, max_span: int = 1024, ramp: int = 32, init: float = 0.0,
                 span_loss: float = 2e-6, dropout: float = 0.0, scale: float | None = None,
                 backend: str | None = None, implementation: str = "auto",
                 flex_tiles: tuple[int, int] = (128, 128)) -> None:
        super().__init__(dropout)
        self.attend = ScaledDotProduct(dropout, scale, backend)  # softmax(qk^T scale + bias) v, SDPA's path
        self.scale = scale
        if max_span <= 0 or ramp <= 0:
            raise ValueError(f"max_span={max_span!r} and ramp={ramp!r} must be positive")
        if not 0.0 <= init <= 1.0:
            raise ValueError(f"init={init!r} must be in [0, 1] (a fraction of max_span)")
        if span_loss < 0:
            raise ValueError(f"span_loss={span_loss!r} must be >= 0")
        self.max_span, self.ramp, self.span_loss = max_span, ramp, span_loss
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation={implementation!r} is not one of {', '.join(IMPLEMENTATIONS)}")
        self.implementation, self.flex_tiles = implementation, (int(flex_tiles[0]), int(flex_tiles[1]))
        self.span_param = nn.Parameter(torch.full((n_heads,), float(init)))  # p_h; z_h = S clamp(p_h, 0, 1)
        self._blocks: tuple[tuple, object] | None = None  # (key, BlockMask) kept in evaluation

    @property
    def span(self) -> Tensor:
        """z: ``(H,)`` the spans in positions, in float32 at least (float64 for a float64 parameter)."""
        p = self.span_param
        return self.max_span * p.to(torch.promote_types(p.dtype, torch.float32)).clamp(0.0, 1.0)

    @torch.no_grad()
    def project_(self) -> None:
        """Projects p onto [0, 1] in place, so that the clamp of :attr:`span` passes p's gradient.

        The tensor's data is changed without a version bump: no graph saves p itself."""
        self.span_param.data.clamp_(0.0, 1.0)

    def ramp_value(self, x: Tensor) -> Tensor:
        """r = (R + z - x) / R for distances ``x: (..., Tq, Tk)`` (integers, or floats): ``(..., H, Tq, Tk)``.

        Computed in float32 at least (float64 with a float64 span or ``x``), whatever autocast or the scores'
        dtype: the mask is a function of integer distances, which bfloat16 holds exactly only up to 256 (it
        has steps of 2 from 256 to 512, where 383 rounds to 384). Distances rounded so would shift mask values
        by up to 1/R, and a span at S = 384 would see r = 1 at x = 383 and get a gradient from that key."""
        z = self.span  # (H,)
        dt = torch.promote_types(z.dtype, x.dtype if x.is_floating_point() else torch.float32)
        return (self.ramp + z.to(dt)[:, None, None] - x.to(dt)[..., None, :, :]) / self.ramp

    def soft_mask(self, x: Tensor) -> Tensor:
        """m_z(x) = clamp((R + z - x) / R, 0, 1) for distances ``x: (..., Tq, Tk)``: ``(..., H, Tq, Tk)``."""
        return self.ramp_value(x).clamp(0.0, 1.0)

    def log_mask(self, x: Tensor) -> Tensor:
        """log m_z(x) (-inf where m = 0; no NaN in the gradient there): :func:`log_ramp` of (R + z - x) / R."""
        return log_ramp(self.ramp_value(x))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                causal: bool = False, need_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be boolean (True = may attend), got {mask.dtype}")
        if self.training:
            self.project_()
        if self._flex_applies(q, mask, need_weights):
            return self.flex_forward(q, k, v, bias=bias, causal=causal)
        tq, tk = q.shape[-2], k.shape[-2]
        if mask is None and not need_weights:
            # keys before the first query's span and ramp: no query reaches them
            start = max(0, tk - tq - math.ceil(float(self.span.detach().max()) + self.ramp))
            if start:
                k, v, tk = k[..., start:, :], v[..., start:, :], tk - start
                bias = bias[..., start:] if bias is not None and bias.shape[-1] > 1 else bias
        span_bias = self.span_bias(q, tk, mask, causal)  # (B or 1, H, Tq, Tk)
        return self.attend(q, k, v, mask=mask, bias=span_bias if bias is None else bias + span_bias, causal=causal,
                               need_weights=need_weights)

    def _flex_applies(self, q: Tensor, mask: Tensor | None, need_weights: bool) -> bool:
        if self.implementation == "sdpa" or mask is not None or need_weights or flex.flex_attention is None:
            return False
        if self.training and self.attend.dropout:  # FlexAttention has no attention dropout
            return False
        if self.implementation == "flex":
            return True
        return flex.available(q) and q.shape[-2] >= flex.MIN_QUERIES

    def block_mask(self, h: int, tq: int, tk: int, causal: bool, device: torch.device) -> object:
        """The FlexAttention block mask of the spans (:func:`span_blocks`): rebuilt on the device at every
        training call, kept in evaluation until the span parameter is written to."""
        key = (h, tq, tk, causal, str(device), self.span_param._version, self.span_param.data_ptr())
        if not self.training and self._blocks is not None and self._blocks[0] == key:
            return self._blocks[1]
        off = tk - tq
        needed, full = span_blocks(self.span.detach().to(device, torch.float32) + self.ramp, tq, tk, causal, self.flex_tiles)
        n, idx = _ordered(needed & ~full)
        n_full, idx_full = _ordered(full)

        def visible(b: Tensor, hh: Tensor, i: Tensor, j: Tensor) -> Tensor:
            return j <= i + off

        def everything(b: Tensor, hh: Tensor, i: Tensor, j: Tensor) -> Tensor:
            return j >= 0

        with torch.inference_mode(False):
            bm = BlockMask.from_kv_blocks(n, idx, n_full, idx_full, BLOCK_SIZE=self.flex_tiles,
                                               mask_mod=visible if causal else everything, seq_lengths=(tq, tk))
        self._blocks = None if self.training else (key, bm)
        return bm

    def flex_forward(self, q: Tensor, k: Tensor, v: Tensor, *, bias: Tensor | None = None, causal: bool = False) -> Tensor:
        """Eq. 3 in FlexAttention: the ramp's log as ``score_mod``, the spans' block mask; ``(B, H, Tq, Dv)``.

        No mask beyond ``causal`` (query i at key Tk - Tq + i); ``bias`` broadcastable to ``(B, H, Tq, Tk)``."""
        b, h, tq, d = q.shape
        tk = k.shape[-2]
        off, ramp = tk - tq, float(self.ramp)
        z = self.span.to(torch.float32)  # (H,) captured: its gradient flows through the score_mod
        bm = self.block_mask(h, tq, tk, causal, q.device)
        extra = None
        if bias is not None:
            extra = bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))  # (B or 1, H or 1, Tq or 1, Tk or 1)
        ones = [extra is not None and extra.shape[i] == 1 for i in range(4)]

        def ramp_mod(score: Tensor, bi: Tensor, hi: Tensor, i: Tensor, j: Tensor) -> Tensor:
            x = (i + off - j).to(torch.float32)
            s = score + log_ramp((ramp + z[hi] - x) / ramp).to(score.dtype)
            if extra is not None:
                zero = torch.zeros_like(i)
                s = s + extra[zero if ones[0] else bi, zero if ones[1] else hi, zero if ones[2] else i,
                              zero if ones[3] else j].to(score.dtype)
            return s

        fn = flex.compiled() if q.is_cuda else flex.flex_attention
        return fn(q, k, v, score_mod=ramp_mod, block_mask=bm, scale=self.attend._scale(d), enable_gqa=k.shape[1] != h)

    def span_bias(self, q: Tensor, tk: int, mask: Tensor | None, causal: bool) -> Tensor:
        """log m_z(x) for each query of ``q: (B, H, Tq, D)`` and each of ``tk`` keys: ``(B or 1, H, Tq, Tk)``.

        A query's position is its last visible key (see the module docstring)."""
        tq = q.shape[-2]
        allowed = combine(mask, causal, tq, tk, q.device)
        keys = torch.arange(tk, device=q.device)
        if allowed is None:
            pos = (tk - tq + torch.arange(tq, device=q.device))[:, None]  # (Tq, 1)
        else:
            pos = torch.where(allowed, keys, -1).amax(-1, keepdim=True)  # (..., Tq, 1): the last visible key
        x = pos - keys  # (..., Tq, Tk) integer distances; the ramp is taken in float32 (:meth:`ramp_value`)
        x = x.squeeze(-3) if x.dim() == 4 and x.shape[-3] == 1 else x  # a mask shared by the heads
        out = self.log_mask(x).to(q.dtype)  # the bias in the scores' dtype, as SDPA takes it
        if out.dim() == 5:  # a per-head mask: (B, H, H', Tq, Tk) -> its own head
            out = out.diagonal(dim1=1, dim2=2).permute(0, 3, 1, 2)
        return out

    def weights(self, q: Tensor, k: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                causal: bool = False) -> Tensor:
        """Dense attention weights ``(B, H, Tq, Tk)`` of eq. 3 (the reference path)."""
        span_bias = self.span_bias(q, k.shape[-2], mask, causal)
        return self.attend.weights(q, k, mask=mask, bias=span_bias if bias is None else bias + span_bias, causal=causal)

    def extra_repr(self) -> str:
        return f"max_span={self.max_span}, ramp={self.ramp}, span_loss={self.span_loss}, implementation={self.implementation}"


def span_kernels(model: nn.Module) -> list[AdaptiveSpan]:
    """The model's adaptive-span kernels, in module order."""
    return [m for m in model.modules() if isinstance(m, AdaptiveSpan)]


def span_penalty(model: nn.Module) -> Tensor | float:
    """The L1 span term lambda sum_i z_i, summed over every head i of the model's adaptive-span kernels.

    Each kernel contributes its own ``span_loss`` (lambda) times the sum of its heads' spans in positions;
    the term is added to the per-token mean loss. 0.0 without any such kernel.

    Args:
        model: any model.
    """
    kernels = span_kernels(model)
    if not kernels:
        return 0.0
    return sum(k.span_loss * k.span.sum() for k in kernels)  # type: ignore[return-value]


def spans(model: nn.Module) -> dict[str, float | list[list[float]]]:
    """The learned spans: ``span_mean``, ``span_max`` (positions) and ``spans`` (per layer, per head).

    Args:
        model: a model with adaptive-span kernels (empty dict without any).
    """
    kernels = span_kernels(model)
    if not kernels:
        return {}
    z = [k.span.detach().float().cpu() for k in kernels]  # S clamp(p, 0, 1): the spans the next forward applies
    flat = torch.cat(z)
    return {"span_mean": float(flat.mean()), "span_max": float(flat.max()), "spans": [[round(float(v), 2) for v in h] for h in z]}
