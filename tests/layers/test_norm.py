"""RMSNorm (Zhang & Sennrich 2019, eq. 4) against torch.nn.RMSNorm and the formula; the norm choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.layers.norm import RMSNorm, build_norm


def test_rms_norm_matches_torch_and_the_formula() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64) * 3 + 1
    mine = RMSNorm(16, eps=1e-6).double()
    theirs = nn.RMSNorm(16, eps=1e-6, dtype=torch.float64)
    with torch.no_grad():
        g = torch.randn(16, dtype=torch.float64)
        mine.weight.copy_(g)
        theirs.weight.copy_(g)
    torch.testing.assert_close(mine(x), theirs(x))
    by_hand = x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6) * g
    torch.testing.assert_close(mine(x), by_hand)


def test_rms_norm_half_precision_normalises_in_float32() -> None:
    x = torch.randn(4, 32) * 100
    mine = RMSNorm(32)
    out = RMSNorm(32).bfloat16()(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), mine(x), atol=0.05, rtol=0.02)


def test_build_norm_kinds() -> None:
    assert isinstance(build_norm("layer", 8), nn.LayerNorm)
    assert isinstance(build_norm("rms", 8), RMSNorm)
    with pytest.raises(ValueError, match="norm='batchy'"):
        build_norm("batchy", 8)
