"""The attention patterns of the sparse and content-based kernels, drawn as their papers draw them.

Each image is the kernel's visibility matrix at one pixel per position: row i is query i, column
j key j, dark where query i may attend to key j. The matrices come from the mask builders the
kernels themselves use (:mod:`attnkit.attention.patterns` through each kernel's ``dense_mask``;
LSH's ``visible`` and routing's ``clusters`` for random queries and keys), so the picture is the
kernel's pattern, not a redrawing of it:

* Longformer (Beltagy et al. 2020, figure 2): sliding, dilated and global windows;
* Sparse Transformer (Child et al. 2019, figure 3): strided and fixed, causal as in the paper;
* BigBird (Zaheer et al. 2020, figure 1): random + window + global blocks;
* Reformer (Kitaev et al. 2020, figure 2): one hashing round, positions sorted by bucket, then the
  same matrix in sequence order;
* Routing Transformer (Roy et al. 2021, figure 1): keys in the query's cluster, sorted by cluster.

``NAME.png`` is the matrix itself; ``NAME_x4.png`` the same pixels enlarged four times for reading;
``overview.png`` all of them side by side with their names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

import attnkit.attention as A
from attnkit.attention.lsh import LSHAttention
from attnkit.attention.routing import RoutingAttention
from attnkit.attention.sparse import SparseAttention

T = 64  # positions drawn
INK = (31, 78, 156)
PAPER = (255, 255, 255)
D, H = 16, 1  # head size and heads of the random queries and keys of the content-based patterns

# name -> (kernel kind, kernel parameters, causal)
PATTERNS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "sliding_window": ("sliding_window", {"window": 9}, False),
    "dilated_window": ("dilated_window", {"window": 9, "dilation": 2}, False),
    "global_window": ("global_window", {"window": 9, "global_positions": [0, 1, 32]}, False),
    "strided": ("strided", {"stride": 8}, True),
    "fixed": ("fixed", {"stride": 8, "c": 2}, True),
    "bigbird": ("bigbird", {"block": 4, "window_blocks": 3, "global_blocks": 1, "random_blocks": 2, "seed": 0}, False),
    "lsh_sorted": ("lsh", {"n_hashes": 1, "n_buckets": 4, "chunk": 8, "seed": 0}, False),
    "lsh": ("lsh", {"n_hashes": 1, "n_buckets": 4, "chunk": 8, "seed": 0}, False),
    "routing_sorted": ("routing", {"n_heads": H, "head_dim": D, "n_clusters": 4, "seed": 0}, False),
    "routing": ("routing", {"n_heads": H, "head_dim": D, "n_clusters": 4, "seed": 0}, False),
}


def content(seed: int = 0) -> tuple[Tensor, Tensor]:
    """The random queries and keys ``(1, H, T, D)`` the content-based patterns are drawn for."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, H, T, D, generator=g), torch.randn(1, H, T, D, generator=g)


def pattern_matrix(name: str) -> Tensor:
    """The ``(T, T)`` boolean matrix drawn as ``name`` (True = may attend), from the kernel's own builder.

    Args:
        name: a key of :data:`PATTERNS`.

    Returns:
        The matrix, rows and columns in the order drawn (sorted by bucket or cluster for ``*_sorted``).
    """
    kind, params, causal = PATTERNS[name]
    kernel = A.get(kind, **params)
    if isinstance(kernel, SparseAttention):
        m = kernel.dense_mask(T, causal=causal)
        return m if m.dim() == 2 else m[0]
    q, k = content()
    if isinstance(kernel, LSHAttention):
        m = kernel.visible(k, causal)[0, 0, 0]  # round 0: same bucket, own or previous sorted chunk
        order = torch.argsort(kernel.buckets(k)[0, 0, 0] * T + torch.arange(T))
    elif isinstance(kernel, RoutingAttention):
        cq, ck = kernel.eval().clusters(q)[0, 0], kernel.clusters(k)[0, 0]
        m = cq[:, None] == ck[None, :]
        order = torch.argsort(cq * T + torch.arange(T))
        k_order = torch.argsort(ck * T + torch.arange(T))
        return m[order][:, k_order] if name.endswith("_sorted") else m
    else:
        raise ValueError(f"no pattern drawing for kernel {kind!r}")
    return m[order][:, order] if name.endswith("_sorted") else m


def image(m: Tensor) -> np.ndarray:
    """``(T, T, 3)`` uint8 pixels: ink where ``m`` is True, paper elsewhere."""
    px = np.empty((*m.shape, 3), dtype=np.uint8)
    px[...] = PAPER
    px[m.numpy()] = INK
    return px


def write_patterns(out: str | os.PathLike, scale: int = 4) -> list[Path]:
    """Write every pattern of :data:`PATTERNS` as ``NAME.png`` (one pixel per position) and ``NAME_x4.png``.

    Args:
        out: the directory (created if missing).
        scale: the enlargement of the second image (nearest neighbour).

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    images = {}
    for name in PATTERNS:
        px = images[name] = image(pattern_matrix(name))
        for path, pixels in ((out / f"{name}.png", px), (out / f"{name}_x{scale}.png", px.repeat(scale, 0).repeat(scale, 1))):
            plt.imsave(path, pixels)
            written.append(path)
    cols = 5
    fig, axes = plt.subplots(-(-len(images) // cols), cols, figsize=(2 * cols, 2.2 * -(-len(images) // cols)), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, px) in zip(axes.flat, images.items()):
        kind, params, causal = PATTERNS[name]
        ax.imshow(px, interpolation="nearest")
        ax.set_title(name.replace("_sorted", " (sorted)") + (", causal" if causal else ""), fontsize=9)
    fig.tight_layout()
    written.append(out / "overview.png")
    fig.savefig(written[-1])
    plt.close(fig)
    return written
