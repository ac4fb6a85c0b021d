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
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnkit.attention.base import AttentionKernel
from attnkit.attention.masks import combine
from attnkit.attention.registry import register
from attnkit.attention.scaled_dot import ScaledDotProduct


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
    """

    def __init__(self, n_heads: int = 1, max_span: int = 1024, ramp: int = 32, init: float = 0.0,
                 span_loss: float = 2e-6, dropout: float = 0.0, scale: float | None = None,
                 backend: str | None = None) -> None:
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
        self.span_param = nn.Parameter(torch.full((n_heads,), float(init)))  # p_h; z_h = S clamp(p_h, 0, 1)

    @property
    def span(self) -> Tensor:
        """z: ``(H,)`` the spans in positions."""
        return self.max_span * self.span_param.clamp(0.0, 1.0)

    @torch.no_grad()
    def project_(self) -> None:
        """Projects p onto [0, 1] in place, so that the clamp of :attr:`span` passes p's gradient.

        The tensor's data is changed without a version bump: no graph saves p itself."""
        self.span_param.data.clamp_(0.0, 1.0)

    def soft_mask(self, x: Tensor) -> Tensor:
        """m_z(x) = clamp((R + z - x) / R, 0, 1) for distances ``x: (..., Tq, Tk)``: ``(..., H, Tq, Tk)``."""
        z = self.span[:, None, None]  # (H, 1, 1)
        return ((self.ramp + z - x[..., None, :, :]) / self.ramp).clamp(0.0, 1.0)

    def log_mask(self, x: Tensor) -> Tensor:
        """log m_z(x) (-inf where m = 0; no NaN in the gradient there)."""
        m = self.soft_mask(x)
        zero = m <= 0
        return torch.where(zero, float("-inf"), torch.where(zero, torch.ones_like(m), m).log())

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                causal: bool = False, need_weights: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        if mask is not None and mask.dtype != torch.bool:
            raise TypeError(f"attention mask must be boolean (True = may attend), got {mask.dtype}")
        if self.training:
            self.project_()
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
        x = (pos - keys).to(q.dtype if q.is_floating_point() else torch.float32)  # (..., Tq, Tk)
        x = x.squeeze(-3) if x.dim() == 4 and x.shape[-3] == 1 else x  # a mask shared by the heads
        out = self.log_mask(x).to(q.dtype)
        if out.dim() == 5:  # a per-head mask: (B, H, H', Tq, Tk) -> its own head
            out = out.diagonal(dim1=1, dim2=2).permute(0, 3, 1, 2)
        return out

    def weights(self, q: Tensor, k: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                causal: bool = False) -> Tensor:
        """Dense attention weights ``(B, H, Tq, Tk)`` of eq. 3 (the reference path)."""
        span_bias = self.span_bias(q, k.shape[-2], mask, causal)
        return self.attend.weights(q, k, mask=mask, bias=span_bias if bias is None else bias + span_bias, causal=causal)

    def extra_repr(self) -> str:
        return f"max_span={self.max_span}, ramp={self.ramp}, span_loss={self.span_loss}"


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
