"""One-row matrix products for decoding at batch 1: a transform applied to a built model.

At one new token per step every ``nn.Linear`` multiplies a single row by its weight, so the
work is reading the weight once, yet a general matrix-multiply kernel chosen for a single row
takes several times longer than that read. Written as an elementwise product summed over the input axis,
``y_n = sum_k x_k W_nk + b_n``, the product is a reduction that ``torch.compile`` (inductor)
emits as a generated kernel reading each weight row once, with the bias and the pointwise
work after it (GELU, the residual add) fused into the same kernel.

The transform changes only the class of each ``nn.Linear`` (weights, names and state dict are
untouched, tied weights stay tied), and the new path is taken only while ``torch.compile``
traces a call with at most :data:`MAX_ROWS` rows: eager calls, training and prefill keep
``F.linear``. Under inductor the reduction accumulates in float32 for bf16/fp16 inputs.

Pre-norm layers put a LayerNorm before the first product of each sublayer (the attention's
``qkv_proj``, the feed-forward ``w1``). Under :func:`use_one_row_linears` with
``fold_norms=True`` that LayerNorm is computed by the product instead of before it. On its own,
the norm's statistics are a reduction of another shape than the product's (one value per row,
against one per output), so inductor gives them a kernel of their own. Here the row is broadcast
to every output, so its mean, its variance (Ba et al. 2016, "Layer Normalization", eq. 4) and the
product are three reductions of the same shape over the same axis, which inductor can fuse into
one kernel (as it fuses a softmax's max and sum). Each output recomputes the statistics of a row
of ``d_model`` numbers: cheap next to a kernel launch.

Attention over the cache keeps SDPA: one query against the cached keys written as two
reductions around a softmax decoded more slowly than SDPA's kernel.

>>> use_one_row_linears(model, fold_norms=True)   # then generate(model, prompts, cfg, compile=True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_ROWS = 4  # above this the weight would be read once per row: a GEMM is the better kernel


def one_row(x: Tensor) -> bool:
    """Whether a call with input ``x`` takes the one-row path: traced by ``torch.compile``, at
    most :data:`MAX_ROWS` rows."""
    return torch.compiler.is_compiling() and x.numel() <= MAX_ROWS * x.shape[-1]


def _layer_norm_rows(x: Tensor, norm: nn.LayerNorm, n: int) -> Tensor:
    """``norm(x)`` for each of ``n`` outputs: ``(..., K) -> (..., n, K)``, statistics in float32."""
    xb = x.unsqueeze(-2).float().expand(*x.shape[:-1], n, x.shape[-1])  # (..., N, K): a view
    mean = xb.mean(-1, keepdim=True)
    centred = xb - mean
    var = centred.square().mean(-1, keepdim=True)  # biased, as LayerNorm's
    h = centred * torch.rsqrt(var + norm.eps)
    if norm.weight is not None:
        h = h * norm.weight.float()
    if norm.bias is not None:
        h = h + norm.bias.float()
    return h.to(x.dtype)  # rounded where the LayerNorm's output would be


class OneRowLinear(nn.Linear):
    """``nn.Linear`` whose compiled one-row calls are a multiply-and-sum reduction, with the
    preceding :class:`FoldedLayerNorm` (if any) computed inside it."""

    folded_norm: nn.LayerNorm | None = None  # set by fold_layer_norms (not a submodule: no new state)

    def forward(self, x: Tensor) -> Tensor:
        if one_row(x):
            if self.folded_norm is not None:
                x = _layer_norm_rows(x, self.folded_norm, self.out_features)  # (..., N, K)
                y = (x * self.weight).sum(-1)  # (..., N)
            else:
                y = (x.unsqueeze(-2) * self.weight).sum(-1)  # (..., 1, K) * (N, K) -> (..., N)
            return y if self.bias is None else y + self.bias
        if self.folded_norm is not None:  # the norm passed its input through: apply it here
            x = F.layer_norm(x, self.folded_norm.normalized_shape, self.folded_norm.weight, self.folded_norm.bias, self.folded_norm.eps)
        return F.linear(x, self.weight, self.bias)


class FoldedLayerNorm(nn.LayerNorm):
    """A LayerNorm whose only consumer is a :class:`OneRowLinear` that applies it: passes its
    input through (that product normalises, on every path)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def fold_layer_norms(model: nn.Module) -> int:
    """Hand each pre-norm sublayer's LayerNorm to the product that alone reads its output: the
    self-attention's ``qkv_proj`` and the feed-forward ``w1`` of every pre-norm
    :class:`~attnkit.layers.blocks.EncoderLayer` whose products are :class:`OneRowLinear`.
    Weights and state dict are unchanged; returns how many norms were folded."""
    from attnkit.layers.blocks import EncoderLayer
    from attnkit.layers.ffn import FeedForward

    n = 0
    for layer in model.modules():
        if not isinstance(layer, EncoderLayer) or layer.res_attn.norm_position != "pre":
            continue
        pairs = [(layer.res_attn.norm, getattr(layer.self_attn, "qkv_proj", None))]
        if type(layer.ffn) is FeedForward:
            pairs.append((layer.res_ffn.norm, layer.ffn.w1))
        for norm, linear in pairs:
            if type(norm) is nn.LayerNorm and type(linear) is OneRowLinear and linear.folded_norm is None:
                object.__setattr__(linear, "folded_norm", norm)  # a reference, not a child module
                norm.__class__ = FoldedLayerNorm
                n += 1
    return n


def use_one_row_linears(model: nn.Module, *, fold_norms: bool = False) -> int:
    """Turn every plain ``nn.Linear`` of ``model`` into a :class:`OneRowLinear`; returns how many.

    ``fold_norms``: also :func:`fold_layer_norms` (pre-norm layers' LayerNorms computed inside
    the product that follows them)."""
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneRowLinear
            n += 1
    if fold_norms:
        fold_layer_norms(model)
    return n
