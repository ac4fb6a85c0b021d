"""Triton kernels of :mod:`attnkit.layers.fused_norm` (imported only where Triton is installed).

The functions are plain Python; :func:`build` turns them into Triton kernels, compiled for the
GPU or run by Triton's interpreter on the CPU (the tests use the interpreter, so the kernels'
arithmetic is checked on machines without a GPU).
"""

import functools

import triton
import triton.language as tl


def _forward(X, H, W, B, S, Y, Mean, Rstd, seed, n_rows, n_cols, p, scale, eps,
             DROPOUT: tl.constexpr, BLOCK: tl.constexpr):
    """One row per program: s = x + dropout(h); y = (s - mean) / sqrt(var + eps) * w + b."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    inside = cols < n_cols
    at = row * n_cols + cols
    x = tl.load(X + at, mask=inside, other=0.0).to(tl.float32)
    h = tl.load(H + at, mask=inside, other=0.0).to(tl.float32)
    if DROPOUT:
        keep = tl.rand(seed, at) >= p  # Philox at (seed, element index): the backward draws it again
        h = tl.where(keep, h * scale, 0.0)
    s = x + h
    mean = tl.sum(s, axis=0) / n_cols
    centred = tl.where(inside, s - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / n_cols + eps)
    w = tl.load(W + cols, mask=inside, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=inside, other=0.0).to(tl.float32)
    tl.store(S + at, s.to(S.dtype.element_ty), mask=inside)
    tl.store(Y + at, (centred * rstd * w + b).to(Y.dtype.element_ty), mask=inside)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


def _backward(DY, S, W, Mean, Rstd, DX, DH, DW, DB, seed, n_rows, n_cols, p, scale,
              DROPOUT: tl.constexpr, ROWS: tl.constexpr, BLOCK: tl.constexpr):
    """A tile of ``ROWS`` rows per program. Per row, with s_hat = (s - mean) * rstd and g = w * dy:
    ds = rstd * (g - mean(g) - s_hat * mean(g * s_hat)); dx = ds; dh = ds * mask * scale.
    The weight gradients dw = sum of dy * s_hat and db = sum of dy over the tile's rows go to
    row ``program_id`` of DW and DB; the caller sums those partial rows."""
    tile = tl.program_id(0)
    rows = tile.to(tl.int64) * ROWS + tl.arange(0, ROWS)[:, None]  # (ROWS, 1)
    cols = tl.arange(0, BLOCK)[None, :]  # (1, BLOCK)
    live = (rows < n_rows) & (cols < n_cols)
    at = rows * n_cols + cols
    dy = tl.load(DY + at, mask=live, other=0.0).to(tl.float32)
    s = tl.load(S + at, mask=live, other=0.0).to(tl.float32)
    mean = tl.load(Mean + rows, mask=rows < n_rows, other=0.0)
    rstd = tl.load(Rstd + rows, mask=rows < n_rows, other=0.0)
    w = tl.load(W + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    s_hat = tl.where(live, (s - mean) * rstd, 0.0)
    g = w * dy
    ds = rstd * (g - tl.sum(g, axis=1)[:, None] / n_cols - s_hat * (tl.sum(g * s_hat, axis=1)[:, None] / n_cols))
    tl.store(DX + at, ds.to(DX.dtype.element_ty), mask=live)
    if DROPOUT:
        keep = tl.rand(seed, at) >= p
        ds = tl.where(keep, ds * scale, 0.0)
    tl.store(DH + at, ds.to(DH.dtype.element_ty), mask=live)
    part = tile.to(tl.int64) * n_cols + tl.arange(0, BLOCK)
    inside = tl.arange(0, BLOCK) < n_cols
    tl.store(DW + part, tl.sum(dy * s_hat, axis=0), mask=inside)
    tl.store(DB + part, tl.sum(dy, axis=0), mask=inside)


@functools.lru_cache(maxsize=1)
def build() -> tuple:
    """``(forward, backward)`` kernels: compiled for the GPU, or run by Triton's CPU interpreter
    where ``TRITON_INTERPRET=1`` was set before triton was first imported."""
    wrap = triton.jit(do_not_specialize=["seed"])
    return wrap(_forward), wrap(_backward)


def next_power_of_2(n: int) -> int:
    return triton.next_power_of_2(n)
