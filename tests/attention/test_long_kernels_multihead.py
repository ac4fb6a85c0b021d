"""The long-sequence kernels inside ``MultiHeadAttention``: built through the registry with the
module's head sizes, padding masks, causal masks and the attention-weight view all work."""

from __future__ import annotations

import pytest
import torch

import attnkit.attention as A

KINDS = {
    "sliding_window": dict(window=8, chunk=16),
    "dilated_window": dict(window=4, dilation=[1, 2, 3, 4], chunk=16),
    "global_window": dict(window=8, global_positions=[0, 3]),
    "strided": dict(stride=6),
    "fixed": dict(stride=8, c=2),
    "bigbird": dict(block=8, random_blocks=1),
    "linear": dict(chunk=16),
    "lsh": dict(n_buckets=4, chunk=8),
    "routing": dict(n_clusters=3, chunk=16),
    "performer": dict(n_features=16, chunk=16),
    "linformer": dict(max_len=64, k=8),
}
BIDIRECTIONAL_ONLY = {"global_window", "bigbird", "linformer"}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("causal", [False, True])
def test_kernel_in_multihead_attention(kind: str, causal: bool) -> None:
    if causal and kind in BIDIRECTIONAL_ONLY:
        pytest.skip("bidirectional-only pattern")
    torch.manual_seed(0)
    mha = A.MultiHeadAttention(32, 4, kind=kind, kernel_params=KINDS[kind]).eval()
    x = torch.randn(2, 45, 32, requires_grad=True)
    keep = torch.ones(2, 1, 1, 45, dtype=torch.bool)
    keep[1, ..., 30:] = False
    out, _ = mha(x, mask=keep, causal=causal)
    out.sum().backward()
    assert out.shape == (2, 45, 32) and torch.isfinite(x.grad).all()
    out_w, w = mha(x, mask=keep, causal=causal, need_weights=True)
    assert w.shape == (2, 4, 45, 45)
    torch.testing.assert_close(out_w, out, rtol=1e-5, atol=1e-5)
    assert (w[1, :, :, 30:] == 0).all()  # padded keys get no weight
    if causal:
        assert (w.triu(diagonal=1) == 0).all()


def test_routing_centroids_are_saved_with_the_model() -> None:
    mha = A.MultiHeadAttention(32, 4, kind="routing", kernel_params=dict(n_clusters=3))
    state = mha.state_dict()
    assert state["kernel.centroids"].shape == (4, 3, 8)
    other = A.MultiHeadAttention(32, 4, kind="routing", kernel_params=dict(n_clusters=3, seed=5))
    other.load_state_dict(state)
    assert torch.equal(other.kernel.centroids, mha.kernel.centroids)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_first_call_under_inference_mode_then_training(kind: str) -> None:
    """Plans and masks cached under ``torch.inference_mode`` must still serve autograd later."""
    mha = A.MultiHeadAttention(32, 4, kind=kind, kernel_params=KINDS[kind])
    x = torch.randn(2, 45, 32)
    with torch.inference_mode():
        mha(x)
    out, _ = mha(x.requires_grad_())
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("kind", sorted(set(KINDS) - {"global_window"}))
def test_empty_sequence(kind: str) -> None:
    kernel = A.build(kind, head_dim=8, n_heads=4, params=KINDS[kind])
    q = torch.randn(2, 4, 0, 8)
    assert kernel(q, q, q).shape == (2, 4, 0, 8)
