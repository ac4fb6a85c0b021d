"""One-row matrix products for decoding at batch 1: a transform applied to a built model.

At one new token per step every ``nn.Linear`` multiplies a single row by its weight, so the
work is reading the weight once. On an H200 the cuBLAS kernels chosen for these one-row
products took about 4.5 us each where reading the weight takes about 1 us (the decode profile
in BENCHMARKS.md). Written as an elementwise product summed over the input axis,
``y_n = sum_k x_k W_nk + b_n``, the product is a reduction that ``torch.compile`` (inductor)
emits as a generated kernel reading each weight row once, with the bias and the pointwise
work after it (GELU, the residual add) fused into the same kernel.

The transform changes only the class of each ``nn.Linear`` (weights, names and state dict are
untouched, tied weights stay tied), and the new path is taken only while ``torch.compile``
traces a call with at most :data:`MAX_ROWS` rows: eager calls, training and prefill keep
``F.linear``. Under inductor the reduction accumulates in float32 for bf16/fp16 inputs.

Session 5 also tried the same for attention over the cache (one query against the cached keys
as two reductions around a softmax): on an H200 it decoded 2,041 tokens/s against 2,152 with
one-row linears alone (BENCHMARKS.md), so it was removed.

>>> use_one_row_linears(model)            # then generate(model, prompts, cfg, compile=True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_ROWS = 4  # above this the weight would be read once per row: a GEMM is the better kernel


class OneRowLinear(nn.Linear):
    """``nn.Linear`` whose compiled one-row calls are a multiply-and-sum reduction."""

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling() and x.numel() <= MAX_ROWS * x.shape[-1]:
            y = (x.unsqueeze(-2) * self.weight).sum(-1)  # (..., 1, K) * (N, K) -> (..., N)
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.weight, self.bias)


def use_one_row_linears(model: nn.Module) -> int:
    """Turn every plain ``nn.Linear`` of ``model`` into a :class:`OneRowLinear`; returns how many."""
    n = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneRowLinear
            n += 1
    return n

