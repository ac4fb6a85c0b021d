"""Dropout, residual sum and LayerNorm of a post-norm sublayer as one kernel (training on CUDA).

The paper's sublayer connection (Vaswani et al. 2017, section 3.1, with the residual dropout of
section 5.4) is ``y = LayerNorm(x + Dropout(h))``. Run as separate operations, training reads
and writes the residual stream several times: forward, dropout, the sum and the norm; backward,
the norm's two kernels, the dropout's and the sum of the two gradients of ``x``. Here the
forward is one Triton kernel, and the backward one kernel plus a sum over row tiles for the
norm's weight and bias. The dropout mask is never stored: both kernels draw it again from
Philox at (seed, element index). What the backward keeps is the sum ``s = x + Dropout(h)`` and
two floats per row.

Numerics follow eager PyTorch: statistics in float32, the output in float32 under autocast (as
autocast runs ``layer_norm``) and in the inputs' dtype otherwise. The random stream differs from
``torch.nn.Dropout``'s, so training is the same in distribution, not bit for bit.

:class:`~attnkit.layers.residual.Residual` uses it where :func:`supported` says so: training,
CUDA tensors, Triton installed, not under ``torch.compile`` (inductor fuses the eager form
itself). ``Residual.fused = False`` turns it off for one module.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

try:
    from attnkit.layers import _norm_kernels as kernels
except ImportError:  # no Triton: the eager operations run instead
    kernels = None  # type: ignore[assignment]

MAX_WIDTH = 8192  # one row per program: wider rows would not fit a program's registers


def supported(x: Tensor, h: Tensor, norm: torch.nn.LayerNorm) -> bool:
    """Whether :func:`dropout_add_layer_norm` can replace the eager operations here."""
    return (
        kernels is not None
        and x.is_cuda
        and x.shape == h.shape
        and norm.weight is not None
        and norm.bias is not None
        and norm.normalized_shape == (x.shape[-1],)
        and x.shape[-1] <= MAX_WIDTH
        and not torch.compiler.is_compiling()
    )


def _interpret(x: Tensor) -> bool:
    """Off the GPU the kernels run in Triton's interpreter (tests set ``TRITON_INTERPRET=1``)."""
    if x.is_cuda:
        return False
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("dropout_add_layer_norm runs on CUDA tensors (or in Triton's interpreter: TRITON_INTERPRET=1)")
    return True


def _next_seed(device: torch.device) -> int:
    """A new dropout seed per call, repeatable after ``torch.manual_seed``. On CUDA it comes from
    the device generator's Philox offset, which this call advances as torch's own dropout does
    (cheaper on the host than drawing from a generator); elsewhere from the CPU generator."""
    if device.type != "cuda":
        return int(torch.randint(2**31 - 1, (1,)).item())
    gen = torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    offset = gen.get_offset()
    gen.set_offset(offset + 4)  # Philox offsets advance in fours
    return (gen.initial_seed() * 1_000_003 + offset) % (2**31 - 1)


def _launch(width: int, interpret: bool, backward: bool) -> dict:
    """Block width (a power of two holding a row), rows per backward tile, warps."""
    block = kernels.next_power_of_2(width)
    out: dict = dict(BLOCK=block)
    if backward:
        out["ROWS"] = max(1, min(16, 4096 // block))
    if not interpret:  # the backward's tile holds ROWS rows: more warps
        out["num_warps"] = 8 if backward else min(max(block // 256, 1), 8)
    return out


class _DropoutAddNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, h: Tensor, weight: Tensor, bias: Tensor, p: float, eps: float, out_dtype: torch.dtype) -> Tensor:
        interpret = _interpret(x)
        forward, _ = kernels.build()
        width = x.shape[-1]
        x2, h2 = x.reshape(-1, width).contiguous(), h.reshape(-1, width).contiguous()
        n_rows = x2.shape[0]
        s = torch.empty(x2.shape, dtype=torch.promote_types(x.dtype, h.dtype), device=x.device)
        y = torch.empty(x2.shape, dtype=out_dtype, device=x.device)
        mean = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        rstd = torch.empty_like(mean)
        seed = _next_seed(x.device) if p > 0 else 0
        launch = _launch(width, interpret, backward=False)
        if n_rows:
            forward[(n_rows,)](x2, h2, weight, bias, s, y, mean, rstd, seed, n_rows, width, p, 1.0 / (1.0 - p), eps,
                               DROPOUT=p > 0, **launch)
        ctx.save_for_backward(s, weight, mean, rstd)
        ctx.seed, ctx.p, ctx.interpret, ctx.dtypes = seed, p, interpret, (x.dtype, h.dtype)
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy: Tensor):
        s, weight, mean, rstd = ctx.saved_tensors
        _, backward = kernels.build()
        n_rows, width = s.shape
        dy2 = dy.reshape(-1, width).contiguous()
        dx = torch.empty(s.shape, dtype=ctx.dtypes[0], device=s.device)
        dh = torch.empty(s.shape, dtype=ctx.dtypes[1], device=s.device)
        launch = _launch(width, ctx.interpret, backward=True)
        tiles = -(-n_rows // launch["ROWS"])
        partial = torch.empty if n_rows else torch.zeros  # every tile writes its row
        dw = partial(max(tiles, 1), width, dtype=torch.float32, device=s.device)
        db = partial(max(tiles, 1), width, dtype=torch.float32, device=s.device)
        if n_rows:
            backward[(tiles,)](dy2, s, weight, mean, rstd, dx, dh, dw, db, ctx.seed, n_rows, width, ctx.p, 1.0 / (1.0 - ctx.p),
                               DROPOUT=ctx.p > 0, **launch)
        shape = dy.shape
        return dx.view(shape), dh.view(shape), dw.sum(0).to(weight.dtype), db.sum(0).to(weight.dtype), None, None, None


def dropout_add_layer_norm(x: Tensor, h: Tensor, weight: Tensor, bias: Tensor, p: float, eps: float) -> Tensor:
    """``layer_norm(x + dropout(h, p), (d,), weight, bias, eps)`` in training, fused (see the module).

    Args:
        x: the sublayer's input (the residual stream), shape ``(..., d)``.
        h: the sublayer's output, same shape (any float dtype: bf16 under autocast).
        weight, bias: the LayerNorm's affine parameters, shape ``(d,)``.
        p: dropout probability of ``h``, in ``[0, 1)``.
        eps: the LayerNorm's epsilon.

    Returns:
        ``(..., d)``: float32 under CUDA autocast, as eager ``layer_norm`` returns there;
        otherwise the promoted dtype of ``x`` and ``h`` (the dtype of their sum, which eager
        ``layer_norm`` keeps).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p={p} must be in [0, 1)")
    if kernels is None:
        raise RuntimeError("dropout_add_layer_norm needs Triton (pip install triton)")
    autocast = x.is_cuda and torch.is_autocast_enabled("cuda")
    out_dtype = torch.float32 if autocast else torch.promote_types(x.dtype, h.dtype)
    return _DropoutAddNorm.apply(x, h, weight, bias, float(p), float(eps), out_dtype)
