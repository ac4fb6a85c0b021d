"""viz patterns: each image equals the kernel's own mask matrix pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import attnkit.attention as A
from attnkit.attention import patterns as P
from attnkit.attention.lsh import LSHAttention
from attnkit.attention.routing import RoutingAttention
from attnkit.attention.sparse import SparseAttention
from attnkit.viz.patterns import INK, PAPER, PATTERNS, T, content, write_patterns

plt = pytest.importorskip("matplotlib.pyplot")


def expected(name: str) -> torch.Tensor:
    """The matrix from the public mask builders (and LSH's and routing's own visibility rules)."""
    kind, p, causal = PATTERNS[name]
    builders = {
        "sliding_window": lambda: P.sliding_window_mask(T, T, window=p["window"], causal=causal),
        "dilated_window": lambda: P.dilated_window_mask(T, T, window=p["window"], dilation=p["dilation"], causal=causal),
        "global_window": lambda: P.global_window_mask(T, window=p["window"], global_positions=p["global_positions"]),
        "strided": lambda: P.strided_mask(T, T, stride=p["stride"], causal=causal),
        "fixed": lambda: P.fixed_mask(T, T, stride=p["stride"], c=p["c"], causal=causal),
        "bigbird": lambda: P.bigbird_mask(T, block=p["block"], window_blocks=p["window_blocks"], global_blocks=p["global_blocks"],
                                          random_blocks=p["random_blocks"], seed=p["seed"]),
    }
    if kind in builders:
        return builders[kind]()
    q, k = content()
    kernel = A.get(kind, **p).eval()
    pos = torch.arange(T)
    if kind == "lsh":
        b = kernel.buckets(k)[0, 0, 0]
        order = torch.argsort(b * T + pos)
        chunk = torch.empty(T, dtype=torch.long)
        chunk[order] = pos // p["chunk"]  # sorted chunk of each position
        m = (b[:, None] == b[None, :]) & ((chunk[:, None] == chunk[None, :]) | (chunk[:, None] - 1 == chunk[None, :]))
        return m[order][:, order] if name.endswith("_sorted") else m
    cq, ck = kernel.clusters(q)[0, 0], kernel.clusters(k)[0, 0]
    m = cq[:, None] == ck[None, :]
    if name.endswith("_sorted"):
        return m[torch.argsort(cq * T + pos)][:, torch.argsort(ck * T + pos)]
    return m


def test_every_sparse_and_content_based_kernel_is_drawn() -> None:
    drawn = {kind for kind, _, _ in PATTERNS.values()}
    for kind in A.names():
        cls = type(A.get(kind, **({"head_dim": 8} if kind in ("additive",) else {})))
        if issubclass(cls, (SparseAttention, LSHAttention, RoutingAttention)):
            assert kind in drawn, f"viz patterns draws no {kind!r}"


def test_images_equal_the_masks_pixel_for_pixel(tmp_path) -> None:
    files = write_patterns(tmp_path)
    assert len(files) == 2 * len(PATTERNS) + 1 and files[-1].name == "overview.png"
    for name in PATTERNS:
        px = (plt.imread(tmp_path / f"{name}.png")[..., :3] * 255).round().astype(np.uint8)
        assert px.shape == (T, T, 3), name
        m = expected(name).numpy()
        assert m.any() and not m.all(), name
        assert (px[m] == INK).all() and (px[~m] == PAPER).all(), name
        big = (plt.imread(tmp_path / f"{name}_x4.png")[..., :3] * 255).round().astype(np.uint8)
        assert (big == px.repeat(4, 0).repeat(4, 1)).all(), name
