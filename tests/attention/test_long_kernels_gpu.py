"""linear, lsh and routing on CUDA: the fast path against the kernel's dense reference path.

Skipped without CUDA; fp32 inputs (no TF32 in matmuls by default), tolerance 1e-4.
"""

from __future__ import annotations

import pytest
import torch

import attnkit.attention as A

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("kind,params", [
    ("linear", dict(chunk=32)),
    ("lsh", dict(n_hashes=3, n_buckets=8, chunk=16)),
    ("routing", dict(n_clusters=4, chunk=32)),
])
@pytest.mark.parametrize("causal", [False, True])
def test_fast_path_equals_reference_on_cuda(kind: str, params: dict, causal: bool) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 300, 32, device="cuda", generator=gen, requires_grad=True) for _ in range(3))
    kernel = A.build(kind, head_dim=32, n_heads=4, params=params).cuda().eval()
    mask = torch.ones(2, 1, 1, 300, dtype=torch.bool, device="cuda")
    mask[1, ..., 250:] = False
    out = kernel(q, k, v, mask=mask, causal=causal)
    ref, _ = kernel(q, k, v, mask=mask, causal=causal, need_weights=True)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
