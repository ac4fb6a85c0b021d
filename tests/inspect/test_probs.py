"""attnkit.inspect.probabilities for every registered kernel, against an independent dense reference.

For each kernel, with key padding and with causal + key padding masks, the recomputed weights of a
few heads and query rows must equal (within 1e-6) the reference weights of tests/attention (a
masked softmax over the same scores, or the kernel's own normalisation, built in float64 from
loops), and multiplied with V they must give what the kernel's fast path returned for those rows.
"""

from __future__ import annotations

import pytest
import torch

import attnkit.attention as A
from attnkit.inspect import probabilities
from kernel_refs import BIDIRECTIONAL_ONLY, PARAMS, PATTERN_PREDICATES, REFERENCES, allowed_mask, user_mask

B, H, T, D = 2, 3, 7, 8
HEADS, ROWS = [0, 2], [0, 3, 6]


def _refusal(kind: str, causal: bool) -> bool:
    return (kind in BIDIRECTIONAL_ONLY or kind == "linformer") and causal


@pytest.mark.parametrize("mask_kind", ["padding", "causal+padding"])
@pytest.mark.parametrize("kind", A.names())
def test_probabilities_equal_the_dense_reference(kind: str, mask_kind: str) -> None:
    assert kind in REFERENCES, f"no reference for {kind!r} in tests/attention/test_attn_kernels.py"
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(0)
    kernel = A.build(kind, head_dim=D, n_heads=H, params=PARAMS.get(kind)).eval()
    lengths = [4, T]  # the first row has padding keys
    allowed = allowed_mask(mask_kind, B, H, T, T, lengths, gen)
    mask, causal = user_mask(mask_kind, allowed, lengths, T)
    q, k, v = (torch.randn(B, H, T, D, generator=gen) for _ in range(3))
    if _refusal(kind, causal):
        with pytest.raises(ValueError):
            kernel(q, k, v, mask=mask, causal=causal)
        return
    with torch.no_grad():
        out = kernel(q, k, v, mask=mask, causal=causal)  # the fast path
    w = probabilities(kernel, q, k, mask=mask, causal=causal, heads=HEADS, rows=ROWS)
    assert w.shape == (B, len(HEADS), len(ROWS), T)

    extra = {"causal": causal} if kind in PATTERN_PREDICATES else {}
    ref = REFERENCES[kind](kernel, q.double(), k.double(), allowed, None, **extra)[:, HEADS][:, :, ROWS]
    torch.testing.assert_close(w.double(), ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(w @ v[:, HEADS], out[:, HEADS][:, :, ROWS], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["lsh", "routing", "bigbird", "dilated_window"])
def test_content_and_per_head_patterns_match_the_fast_path(kind: str) -> None:
    """Real buckets and clusters (several of each), random blocks, per-head dilation: the
    recomputed rows reproduce the fast path's output and the kernel's dense reference weights."""
    params = {
        "lsh": dict(n_hashes=3, n_buckets=4, chunk=4),
        "routing": dict(n_clusters=3, chunk=4),
        "bigbird": dict(block=4, window_blocks=1, global_blocks=1, random_blocks=1),
        "dilated_window": dict(window=3, dilation=[1, 2, 3]),
    }[kind]
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    kernel = A.build(kind, head_dim=D, n_heads=H, params=params).eval()
    t = 24
    q, k, v = (torch.randn(B, H, t, D, generator=gen) for _ in range(3))
    mask = (torch.arange(t) < torch.tensor([17, t])[:, None])[:, None, None, :]  # (B, 1, 1, T)
    rows, heads = [0, 5, 16, 23], [1, 2]
    with torch.no_grad():
        out = kernel(q, k, v, mask=mask)
        dense = kernel.weights(q, k, mask=mask)
    w = probabilities(kernel, q, k, mask=mask, heads=heads, rows=rows)
    torch.testing.assert_close(w, dense[:, heads][:, :, rows], rtol=0, atol=1e-6)
    torch.testing.assert_close(w @ v[:, heads], out[:, heads][:, :, rows], rtol=1e-5, atol=1e-5)


def test_rows_of_a_decoding_step_are_bottom_right_aligned() -> None:
    """Three new queries over ten keys (a KV cache): the causal rows end at the last key."""
    kernel = A.build("sliding_window", head_dim=D, n_heads=1, params=dict(window=4)).eval()
    gen = torch.Generator().manual_seed(1)
    q, k = torch.randn(1, 1, 3, D, generator=gen), torch.randn(1, 1, 10, D, generator=gen)
    w = probabilities(kernel, q, k, causal=True, rows=[0, 2])
    seen = (w[0, 0] > 0).nonzero().tolist()
    assert seen == [[0, 4], [0, 5], [0, 6], [0, 7], [1, 6], [1, 7], [1, 8], [1, 9]]


def test_grouped_key_heads_are_shared_by_their_query_heads() -> None:
    kernel = A.build("scaled_dot", head_dim=D, n_heads=4).eval()
    gen = torch.Generator().manual_seed(2)
    q, k = torch.randn(1, 4, 5, D, generator=gen), torch.randn(1, 2, 5, D, generator=gen)
    w = probabilities(kernel, q, k, heads=[3])
    ref = torch.softmax(q[:, 3:] @ k[:, 1:].transpose(-2, -1) / D**0.5, dim=-1)
    torch.testing.assert_close(w, ref, rtol=0, atol=1e-6)


def test_an_index_outside_the_sequence_is_refused() -> None:
    kernel = A.build("scaled_dot", head_dim=D, n_heads=1)
    q = torch.randn(1, 1, 4, D)
    with pytest.raises(ValueError, match="outside 0..3"):
        probabilities(kernel, q, q, rows=[4])
