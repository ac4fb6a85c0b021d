"""The GPU path of the sparse patterns (FlexAttention block masks) against their dense masks.

Skipped without CUDA. fp32 inputs; FlexAttention may use TF32-free fp32 math but sums in a
different order, so the tolerance is 2e-4 rather than the CPU tests' 1e-5.
"""

from __future__ import annotations

import pytest
import torch

import attnkit.attention as A
from attnkit.attention import flex

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

KINDS = [
    ("sliding_window", dict(window=64), True),
    ("dilated_window", dict(window=16, dilation=[1, 2, 3, 4]), True),
    ("global_window", dict(window=32, global_positions=[0, 5, 250]), False),
    ("strided", dict(stride=16), True),
    ("fixed", dict(stride=32, c=4), True),
    ("bigbird", dict(block=16, random_blocks=2, seed=1), False),
]


@pytest.mark.parametrize("t", [300])
@pytest.mark.parametrize("kind,params,can_be_causal", KINDS, ids=[f"{k[0]}-{i}" for i, k in enumerate(KINDS)])
def test_flex_path_equals_dense_mask(kind: str, params: dict, can_be_causal: bool, t: int) -> None:
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, t, 32, device="cuda", generator=gen, requires_grad=True) for _ in range(3))
    fast = A.get(kind, **params)
    ref = A.get(kind, **{**params, "backend": "dense"})
    assert flex.available(q)
    for causal in (False, True) if can_be_causal else (False,):
        out = fast(q, k, v, causal=causal)
        want = ref(q, k, v, causal=causal)
        torch.testing.assert_close(out, want, rtol=2e-4, atol=2e-4)
        g = torch.randn_like(out)
        for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
        chunked = A.get(kind, **{**params, "backend": "chunked"})(q, k, v, causal=causal)
        torch.testing.assert_close(chunked, want, rtol=2e-4, atol=2e-4)


def test_block_mask_is_built_once_per_shape() -> None:
    q = torch.randn(1, 2, 256, 32, device="cuda")
    kernel = A.get("sliding_window", window=32)
    kernel(q, q, q)
    n = len(flex._MASKS)
    kernel(q, q, q)
    assert len(flex._MASKS) == n
    kernel(q[:, :, :200], q[:, :, :200], q[:, :, :200])
    assert len(flex._MASKS) == n + 1


@pytest.mark.parametrize("kind,params,can_be_causal", KINDS, ids=[f"{k[0]}-{i}" for i, k in enumerate(KINDS)])
def test_flex_path_with_key_padding_equals_dense_mask(kind: str, params: dict, can_be_causal: bool) -> None:
    """A key-padding mask keeps the FlexAttention path (as a score mod); outputs and gradients
    equal the dense pattern AND padding; queries left without a key give zeros."""
    t = 300
    gen = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(2, 4, t, 32, device="cuda", generator=gen, requires_grad=True) for _ in range(3))
    keep = torch.ones(2, 1, 1, t, dtype=torch.bool, device="cuda")
    keep[1, ..., 170:] = False
    fast = A.get(kind, **params)
    ref = A.get(kind, **{**params, "backend": "dense"})
    assert flex.key_padding(keep, 2, t) is not None
    for causal in (False, True) if can_be_causal else (False,):
        out = fast(q, k, v, mask=keep, causal=causal)
        want = ref(q, k, v, mask=keep, causal=causal)
        torch.testing.assert_close(out, want, rtol=2e-4, atol=2e-4)
        g = torch.randn_like(out)
        for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("tiles", [(128, 64), (64, 64)])
def test_bigbird_tiles_of_64_equal_dense_mask(tiles: tuple[int, int]) -> None:
    """``flex_tiles`` with 64-token key tiles (whole blocks per tile, compiled with max-autotune)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, 2, 1000, 64, device="cuda", generator=gen, requires_grad=True) for _ in range(3))
    params = dict(block=64, random_blocks=3, seed=0)
    out = A.get("bigbird", **params, flex_tiles=tiles)(q, k, v)
    want = A.get("bigbird", **params, backend="dense")(q, k, v)
    torch.testing.assert_close(out, want, rtol=2e-4, atol=2e-4)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_bigbird_cuda_graphs_equal_dense_mask_over_steps() -> None:
    """``cuda_graphs=True``: replayed calls (three training steps, new inputs each) stay exact."""
    params = dict(block=64, random_blocks=3, seed=0)
    fast = A.get("bigbird", **params, flex_tiles=(64, 64), cuda_graphs=True)
    ref = A.get("bigbird", **params, backend="dense")
    gen = torch.Generator(device="cuda").manual_seed(2)
    for _ in range(3):
        q, k, v = (torch.randn(1, 2, 1024, 64, device="cuda", generator=gen, requires_grad=True) for _ in range(3))
        out = fast(q, k, v)
        g = torch.randn_like(out)
        got = [out.detach().clone(), *torch.autograd.grad(out, (q, k, v), g)]
        want_out = ref(q, k, v)
        want = [want_out.detach(), *torch.autograd.grad(want_out, (q, k, v), g)]
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("kind", ["linear", "performer"])
@pytest.mark.parametrize("causal", [False, True])
def test_compiled_linear_attention_equals_eager(kind: str, causal: bool) -> None:
    """The CUDA fast path of linear attention runs compiled; it equals the eager arithmetic."""
    gen = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(2, 4, 333, 32, device="cuda", generator=gen, requires_grad=True) for _ in range(3))
    keep = torch.ones(2, 1, 1, 333, dtype=torch.bool, device="cuda")
    keep[0, ..., 300:] = False
    params = {"head_dim": 32} if kind == "performer" else {}
    fast = A.get(kind, **params).cuda()
    slow = A.get(kind, **params, compiled=False, **({"function": False} if kind == "linear" else {})).cuda()
    slow.load_state_dict(fast.state_dict())
    out, want = fast(q, k, v, mask=keep, causal=causal), slow(q, k, v, mask=keep, causal=causal)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)
