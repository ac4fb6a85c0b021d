"""The packed head split against autograd through torch's own view operations."""

import pytest
import torch
import torch.nn.functional as F

from attnkit.attention.heads import packed_heads


def reference(x, n, h):
    b, t, w = x.shape
    return x.view(b, t, n, h, w // (n * h)).permute(2, 0, 3, 1, 4).unbind(0)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("used", ["all", "first"])  # "first": the other heads never reach the loss
def test_values_and_gradients_match_plain_views(n, used):
    torch.manual_seed(0)
    x = torch.randn(2, 5, n * 12, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    ours, ref = packed_heads(x, n, 3), reference(x_ref, n, 3)
    weights = [torch.randn_like(r) for r in ref]
    pick = range(n) if used == "all" else range(1)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape == (2, 3, 5, 4) and torch.equal(a, b)
    sum((ours[i] * weights[i]).sum() for i in pick).backward()
    sum((ref[i] * weights[i]).sum() for i in pick).backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)


def test_through_attention():
    """q, k, v of one packed projection through SDPA (the math path on the CPU): same gradient."""
    torch.manual_seed(1)
    x = torch.randn(3, 7, 3 * 16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = F.scaled_dot_product_attention(*packed_heads(x, 3, 4), is_causal=True)
    ref = F.scaled_dot_product_attention(*reference(x_ref, 3, 4), is_causal=True)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad)


def test_no_autograd_no_function():
    x = torch.randn(2, 5, 24)
    with torch.no_grad():
        q, k, v = packed_heads(x.requires_grad_(), 3, 2)
    assert q.grad_fn is None and q._base is not None  # plain views


@pytest.mark.gpu
def test_gradients_on_cuda_with_the_memory_efficient_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    x = torch.randn(4, 16, 3 * 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        out = F.scaled_dot_product_attention(*packed_heads(x, 3, 2))
        ref = F.scaled_dot_product_attention(*reference(x_ref, 3, 2))
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    assert x.grad.is_contiguous()
    torch.testing.assert_close(x.grad, x_ref.grad)
