"""LSH attention's FlexAttention path (all rounds in one call over the sorted sequences)
against its chunked path, which the other LSH tests hold to the dense definition.

On the CPU, FlexAttention runs eagerly and forward only, so the CPU test patches
``flex.available`` and ``flex.compiled`` and checks outputs; the CUDA test (skipped without a
GPU) runs the compiled kernel and checks gradients too.
"""

from __future__ import annotations

import pytest
import torch

import attnkit.attention as A
from attnkit.attention import flex

pytestmark = pytest.mark.skipif(flex.flex_attention is None, reason="no FlexAttention")

CASES = [  # (length, causal, buckets, chunk, key padding)
    (200, False, 4, 32, False),
    (256, True, 8, 32, False),
    (130, False, 2, 64, True),  # a length that is not a multiple of the chunk
    (300, True, 4, 32, True),
    (64, False, 1, 64, False),  # one bucket, one chunk: full attention minus self
]


def _inputs(t: int, pad: bool, device: str, requires_grad: bool = False):
    gen = torch.Generator(device=device).manual_seed(t)
    q, k, v = (torch.randn(2, 3, t, 16, generator=gen, device=device, requires_grad=requires_grad) for _ in range(3))
    keep = None
    if pad:
        keep = torch.ones(2, 1, 1, t, dtype=torch.bool, device=device)
        keep[1, ..., t - 50 :] = False
    return q, k, v, keep


def _check_against_eager_chunked_on_cuda(backend: str, t: int, causal: bool, buckets: int, chunk: int, pad: bool) -> None:
    """``backend``'s outputs and gradients against the eager chunked path (fp32, CUDA)."""
    q, k, v, keep = _inputs(t, pad, "cuda", requires_grad=True)
    params = dict(n_hashes=3, n_buckets=buckets, chunk=chunk, seed=1)
    out = A.get("lsh", **params, backend=backend)(q, k, v, mask=keep, causal=causal)
    want = A.get("lsh", **params, backend="chunked")(q, k, v, mask=keep, causal=causal)
    torch.testing.assert_close(out, want, rtol=2e-4, atol=2e-4)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("t,causal,buckets,chunk,pad", CASES)
def test_flex_path_equals_chunked_on_cpu(monkeypatch, t: int, causal: bool, buckets: int, chunk: int, pad: bool) -> None:
    monkeypatch.setattr(flex, "available", lambda q: True)
    monkeypatch.setattr(flex, "compiled", lambda autotune=False: flex.flex_attention)
    q, k, v, keep = _inputs(t, pad, "cpu")
    params = dict(n_hashes=3, n_buckets=buckets, chunk=chunk, seed=1)
    with torch.no_grad():
        out = A.get("lsh", **params, backend="flex")(q, k, v, mask=keep, causal=causal)
        want = A.get("lsh", **params, backend="chunked")(q, k, v, mask=keep, causal=causal)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    flex._MASKS.clear()


def test_flex_backend_refuses_cpu_tensors_and_unknown_backends() -> None:
    q = torch.randn(1, 2, 256, 16)
    out = A.get("lsh", n_buckets=4, chunk=32)(q, q, q)
    assert out.shape == q.shape
    with pytest.raises(ValueError, match="backend='flex' needs CUDA"):
        A.get("lsh", backend="flex")(q, q, q)
    with pytest.raises(ValueError, match="backend="):
        A.get("lsh", backend="dense")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("t,causal,buckets,chunk,pad", CASES)
def test_flex_path_equals_chunked_on_cuda_with_gradients(t: int, causal: bool, buckets: int, chunk: int, pad: bool) -> None:
    _check_against_eager_chunked_on_cuda("flex", t, causal, buckets, chunk, pad)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("t,causal,buckets,chunk,pad", CASES[:4])
def test_compiled_chunked_path_equals_eager_on_cuda(t: int, causal: bool, buckets: int, chunk: int, pad: bool) -> None:
    """``backend="auto"`` on CUDA runs the chunked path compiled; it equals the eager one."""
    _check_against_eager_chunked_on_cuda("auto", t, causal, buckets, chunk, pad)


@pytest.mark.slow
def test_compiled_chunked_path_equals_eager_on_cpu() -> None:
    """The function CUDA runs compiled (``_compiled_chunked``), compiled here for the CPU:
    the same outputs and gradients as the eager chunked path, with padding and causal."""
    from attnkit.attention import lsh

    q, k, v, keep = _inputs(200, True, "cpu", requires_grad=True)
    kernel = A.get("lsh", n_hashes=2, n_buckets=4, chunk=32, seed=1)
    rot = kernel.rotations(16, q.device)
    key_keep = keep[:, 0, 0, :]
    out = lsh._compiled_chunked(kernel, q, k, v, key_keep, True, rot)
    want = kernel._chunked(q, k, v, key_keep, True, rot)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
