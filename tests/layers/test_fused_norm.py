"""The fused dropout + residual + LayerNorm kernel against eager PyTorch.

Without a GPU the kernels run in Triton's CPU interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1``); on a GPU machine they are compiled. The dropout mask is not an output, so it is read back from the gradient
of ``h`` (zero exactly where an element was dropped) and the eager reference is rebuilt with
that mask: forward and backward must then agree with ``torch.nn.functional.layer_norm``.
"""

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from attnkit.layers import fused_norm  # noqa: E402
from attnkit.layers.residual import Residual  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the same tests, compiled, on a GPU machine


def inputs(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = shape[-1]
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    h = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    w = (1 + 0.3 * torch.randn(d, generator=g, dtype=torch.float64)).float().requires_grad_()
    b = (0.1 * torch.randn(d, generator=g, dtype=torch.float64)).float().requires_grad_()
    dy = torch.randn(shape, generator=g, dtype=torch.float64).float()
    return tuple(t.detach().to(DEVICE).requires_grad_(t.requires_grad) for t in (x, h, w, b, dy))


def eager(x, h, w, b, keep, p, eps):
    """The reference: autograd through torch's own operations, with the kernel's mask."""
    xr, hr, wr, br = (t.detach().double().requires_grad_() for t in (x, h, w, b))
    y = F.layer_norm(xr + hr * keep / (1 - p), (x.shape[-1],), wr, br, eps)
    return y, (xr, hr, wr, br)


@pytest.mark.parametrize("shape", [(2, 5, 32), (7, 48), (3, 1, 100)])  # 48 and 100: rows narrower than the block
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_forward_and_backward_match_eager(shape, p):
    torch.manual_seed(1)
    x, h, w, b, dy = inputs(shape)
    y = fused_norm.dropout_add_layer_norm(x, h, w, b, p, 1e-5)
    y.backward(dy)
    keep = (h.grad != 0).double()  # dh = ds * mask / (1 - p): zero exactly where dropped
    if p == 0:
        assert keep.all()
    ref, leaves = eager(x, h, w, b, keep, p, 1e-5)
    ref.backward(dy.double())
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
    for got, want in zip((x.grad, h.grad, w.grad, b.grad), leaves):
        torch.testing.assert_close(got.double(), want.grad, rtol=1e-4, atol=1e-4)


def test_dropout_rate_and_fresh_masks():
    torch.manual_seed(0)
    x, h, w, b, dy = inputs((64, 128))
    masks = []
    for _ in range(2):
        h.grad = None
        fused_norm.dropout_add_layer_norm(x, h, w, b, 0.25, 1e-5).backward(dy)
        masks.append(h.grad != 0)
    dropped = [1 - m.float().mean().item() for m in masks]
    n = x.numel()  # 8,192 draws each: the dropped share is 0.25 within 5 standard deviations
    assert all(abs(d - 0.25) < 5 * (0.25 * 0.75 / n) ** 0.5 for d in dropped), dropped
    assert (masks[0] != masks[1]).float().mean() > 0.2  # a new seed per call


def test_seeded_calls_repeat():
    out = []
    for _ in range(2):
        torch.manual_seed(7)
        x, h, w, b, _ = inputs((4, 64))
        out.append(fused_norm.dropout_add_layer_norm(x, h, w, b, 0.5, 1e-5))
    assert torch.equal(out[0], out[1])


def test_mixed_dtypes_as_autocast_leaves_them():
    """bf16 sublayer output on a float32 residual stream: the sum and the output are float32,
    and each gradient comes back in its input's dtype."""
    torch.manual_seed(0)
    x, _, w, b, dy = inputs((6, 64))
    h = torch.randn(6, 64, device=DEVICE).bfloat16().requires_grad_()
    y = fused_norm.dropout_add_layer_norm(x, h, w, b, 0.0, 1e-5)
    y.backward(dy)
    ref = F.layer_norm(x.detach() + h.detach().float(), (64,), w.detach(), b.detach(), 1e-5)
    assert y.dtype == torch.float32 and x.grad.dtype == torch.float32 and h.grad.dtype == torch.bfloat16
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_empty_input():
    x, h, w, b, _ = inputs((0, 16))
    y = fused_norm.dropout_add_layer_norm(x, h, w, b, 0.1, 1e-5)
    y.sum().backward()
    assert y.shape == (0, 16) and w.grad.abs().sum() == 0


def test_bad_probability():
    x, h, w, b, _ = inputs((2, 8))
    with pytest.raises(ValueError, match="dropout p=1.0"):
        fused_norm.dropout_add_layer_norm(x, h, w, b, 1.0, 1e-5)


def test_cpu_tensors_need_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, h, w, b, _ = (t.detach().cpu() for t in inputs((2, 8)))
    with pytest.raises(RuntimeError, match="CUDA tensors"):
        fused_norm.dropout_add_layer_norm(x, h, w, b, 0.1, 1e-5)


def test_residual_uses_it_only_where_supported():
    """Only CUDA tensors in training fuse; eval mode, pre-norm and ``fused = False`` run eager."""
    res = Residual(16, 0.1).to(DEVICE).train()
    x = torch.randn(2, 3, 16, device=DEVICE)
    assert fused_norm.supported(x, x, res.norm) == (DEVICE == "cuda")
    assert not fused_norm.supported(x.cpu(), x.cpu(), torch.nn.LayerNorm(16))
    res.fused = False
    torch.manual_seed(0)
    a = res(x, lambda t: 2 * t)
    torch.manual_seed(0)
    assert torch.equal(a, res.norm(x + res.dropout(2 * x)))
    res.eval()
    assert torch.equal(res(x, lambda t: 2 * t), res.norm(3 * x))


@pytest.mark.gpu
def test_training_step_under_autocast_matches_eager_in_distribution():
    """A post-norm encoder layer in bf16 autocast, fused against eager with dropout 0: the same
    output and gradients to bf16 rounding."""
    from attnkit.layers.blocks import EncoderLayer, LayerSpec

    torch.manual_seed(0)
    layer = EncoderLayer(LayerSpec(d_model=64, n_heads=4, d_ff=128, dropout=0.0)).cuda().train()
    x = torch.randn(4, 10, 64, device="cuda", requires_grad=True)
    out = {}
    for fused in (True, False):
        for m in layer.modules():
            if isinstance(m, Residual):
                m.fused = fused
        x.grad = None
        layer.zero_grad()
        with torch.autocast("cuda", torch.bfloat16):
            y, _ = layer(x)
        y.float().pow(2).sum().backward()
        out[fused] = (y.float(), x.grad.clone(), layer.res_ffn.norm.weight.grad.clone())
    for a, b in zip(out[True], out[False]):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
