"""The packed head split against autograd through torch's own view operations."""

import pytest
import torch
import torch.nn.functional as F

from attnkit.attention.heads import packed_heads, packed_view


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


def test_packed_view_finds_one_buffer():
    buf = torch.randn(2, 5, 3, 4, 8)  # (B, T, n, H, D)
    grads = buf.permute(2, 0, 3, 1, 4).unbind(0)
    view = packed_view(grads, tuple(buf.shape))
    assert view is not None and view.data_ptr() == buf.data_ptr() and torch.equal(view, buf)


def test_packed_view_refuses_anything_else():
    shape = (2, 5, 3, 4, 8)
    separate = tuple(torch.randn(2, 4, 5, 8) for _ in range(3))  # three buffers
    assert packed_view(separate, shape) is None
    buf = torch.randn(shape)
    q, k, v = buf.permute(2, 0, 3, 1, 4).unbind(0)
    assert packed_view((k, q, v), shape) is None  # out of order
    assert packed_view((q, k, v.clone()), shape) is None  # one of them copied
    assert packed_view((q, k, v.half()), shape) is None


def test_no_autograd_no_function():
    x = torch.randn(2, 5, 24)
    with torch.no_grad():
        q, k, v = packed_heads(x.requires_grad_(), 3, 2)
    assert q.grad_fn is None and q._base is not None  # plain views


@pytest.mark.gpu
def test_memory_efficient_backward_writes_one_buffer():
    """The premise of the copy-free path: SDPA's memory-efficient backward writes the gradients
    of q, k and v that share storage into one (B, T, 3, H, D) buffer."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    x = torch.randn(4, 16, 3 * 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    q, k, v = reference(x, 3, 2)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        out = F.scaled_dot_product_attention(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), torch.randn_like(out))
    assert packed_view(grads, (4, 16, 3, 2, 64)) is not None
