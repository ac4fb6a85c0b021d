"""Linear attention against its explicit normalised form, and the recurrent decode against the parallel form.

Reference (Katharopoulos et al. 2020, eq. (4) with phi = elu + 1), written out here:
``W = phi(Q) phi(K)^T`` masked, each row divided by its sum, ``out = W V``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import attnkit.attention as A


def phi(x: Tensor) -> Tensor:
    return torch.where(x > 0, x + 1, torch.exp(x))  # elu(x) + 1, written out


def explicit(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | None) -> Tensor:
    w = torch.einsum("bhid,bhjd->bhij", phi(q), phi(k))
    if allowed is not None:
        w = w * allowed
    den = w.sum(-1, keepdim=True)
    return (w / torch.where(den > 0, den, torch.ones_like(den))) @ v


def _inputs(tq: int, tk: int, seed: int, dtype=torch.float64) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, tq, 5, generator=gen, dtype=dtype, requires_grad=True)
    k = torch.randn(2, 3, tk, 5, generator=gen, dtype=dtype, requires_grad=True)
    v = torch.randn(2, 3, tk, 4, generator=gen, dtype=dtype, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("tq,tk", [(1, 1), (9, 9), (64, 64), (70, 70), (3, 17), (17, 5), (1, 33)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("padding", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_linear_equals_explicit_form(tq: int, tk: int, causal: bool, padding: bool, chunk: int) -> None:
    q, k, v = _inputs(tq, tk, tq * 100 + tk)
    allowed = torch.ones(tq, tk, dtype=torch.bool)
    if causal:
        allowed = torch.tensor([[j <= tk - tq + i for j in range(tk)] for i in range(tq)])
    mask = None
    if padding:
        mask = torch.tensor([[j < n for j in range(tk)] for n in (tk, max(0, tk - 3))])[:, None, None, :]
        allowed = allowed & mask
    expected = explicit(q, k, v, allowed)
    out = A.get("linear", chunk=chunk)(q, k, v, mask=mask, causal=causal)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(expected, (q, k, v), g)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_linear_float32_within_1e5() -> None:
    q, k, v = _inputs(50, 50, 0, torch.float32)
    for causal in (False, True):
        allowed = torch.ones(50, 50, dtype=torch.bool).tril() if causal else None
        torch.testing.assert_close(A.get("linear", chunk=8)(q, k, v, causal=causal), explicit(q, k, v, allowed), rtol=1e-5, atol=1e-5)


def test_linear_general_mask_and_weights_use_the_reference_path() -> None:
    q, k, v = _inputs(6, 7, 1)
    gen = torch.Generator().manual_seed(0)
    allowed = torch.rand(2, 3, 6, 7, generator=gen) < 0.5
    out, w = A.get("linear")(q, k, v, mask=allowed, need_weights=True)
    torch.testing.assert_close(out, explicit(q, k, v, allowed))
    torch.testing.assert_close(A.get("linear")(q, k, v, mask=allowed), out)
    assert torch.allclose(w.sum(-1)[allowed.any(-1)], torch.ones(()).double())


@pytest.mark.parametrize("t", [1, 5, 40])
def test_recurrent_decode_equals_parallel_causal(t: int) -> None:
    q, k, v = (x.detach() for x in _inputs(t, t, 3))
    kernel = A.get("linear", chunk=8)
    parallel = kernel(q, k, v, causal=True)
    state = kernel.init_state(2, 3, 5, 4, dtype=torch.float64)
    outs = []
    for i in range(t):
        o, state = kernel.step(q[:, :, i : i + 1], k[:, :, i : i + 1], v[:, :, i : i + 1], state)
        outs.append(o)
        assert state.s.shape == (2, 3, 5, 4) and state.z.shape == (2, 3, 5)  # fixed size
    assert state.t == t
    torch.testing.assert_close(torch.cat(outs, dim=2), parallel, rtol=1e-10, atol=1e-10)


def test_linear_refuses_bias_and_dropout() -> None:
    q, k, v = _inputs(3, 3, 0)
    with pytest.raises(ValueError, match="bias"):
        A.get("linear")(q, k, v, bias=torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="dropout"):
        A.get("linear", dropout=0.1)
    with pytest.raises(ValueError, match="chunk"):
        A.get("linear", chunk=0)


@pytest.mark.slow
def test_compiled_fast_path_equals_eager_on_cpu() -> None:
    """The function CUDA runs compiled (``linear._compiled``), compiled here for the CPU: same
    outputs and gradients as eager, causal and not, with key padding, for linear and performer."""
    from attnkit.attention import linear

    torch.manual_seed(3)
    q, k, v = (torch.randn(2, 2, 70, 16, requires_grad=True) for _ in range(3))
    keep = torch.ones(2, 1, 1, 70, dtype=torch.bool)
    keep[1, ..., 50:] = False
    for kernel in (A.get("linear", chunk=16), A.get("performer", head_dim=16, n_features=32, chunk=16)):
        for causal in (False, True):
            out = linear._compiled(type(kernel), None)(kernel, q, k, v, keep, causal)
            want = kernel._compute(q, k, v, keep, causal)
            torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
            g = torch.randn_like(out)
            for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(want, (q, k, v), g)):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("padding", [False, True])
def test_non_causal_function_gradcheck(padding: bool) -> None:
    """:class:`NonCausal`'s hand-written backward against finite differences (float64)."""
    from attnkit.attention.linear import NonCausal

    q, k, v = _inputs(6, 7, 11)
    keep = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])[:, None, None, :] if padding else None
    assert torch.autograd.gradcheck(lambda q, k, v: NonCausal.apply(q, k, v, keep), (q, k, v))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_non_causal_function_equals_generic_path(dtype: torch.dtype) -> None:
    """``function=True`` (the autograd Function) against ``function=False`` (the causal kind's path),
    half precision included: outputs and gradients, with a row that sees no key."""
    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 3, 40, 16, generator=gen).to(dtype).requires_grad_() for _ in range(3))
    keep = torch.ones(2, 1, 1, 40, dtype=torch.bool)
    keep[1, ..., 25:] = False
    keep[0] = False  # batch row 0 sees nothing: zeros, zero gradients
    outs, grads = [], []
    g = torch.randn(2, 3, 40, 16, generator=gen).to(dtype)
    for function in (True, False):
        out = A.get("linear", function=function)(q, k, v, mask=keep)
        outs.append(out)
        grads.append(torch.autograd.grad(out, (q, k, v), g))
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}
    torch.testing.assert_close(outs[0], outs[1], **tol)
    assert outs[0][0].abs().max() == 0
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("tq,tk", [(600, 600), (530, 1100), (700, 40)])
def test_generic_path_partial_sums_equal_explicit_form(tq: int, tk: int) -> None:
    """Beyond 2 * SPLIT positions the generic non-causal path sums in partial sums (padded
    to whole SPLITs): same outputs and gradients as the explicit form, with key padding."""
    q, k, v = _inputs(tq, tk, 7)
    mask = torch.tensor([[j < n for j in range(tk)] for n in (tk, tk - 17)])[:, None, None, :]
    expected = explicit(q, k, v, mask)
    out = A.get("linear", function=False)(q, k, v, mask=mask)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(expected, (q, k, v), g)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
