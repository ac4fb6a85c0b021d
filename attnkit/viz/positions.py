"""Figures of position encodings: the sinusoidal table, similarity by distance, rotary and ALiBi.

* Sinusoidal (Vaswani et al. 2017, section 3.5): ``PE(pos, 2i) = sin(pos / 10000^(2i/d))``,
  ``PE(pos, 2i+1) = cos(...)``; the dot product ``PE(p) . PE(p + k)`` depends only on the offset k,
  which the paper gives as the reason a model can attend by relative position.
* Rotary (Su et al. 2021, RoFormer, section 3.4.3): the score of a query and a key rotated to
  positions m and n depends on ``m - n`` alone, and its bound decays with the distance; drawn for
  a query and a key of ones.
* ALiBi (Press et al. 2022, figure 3): the per-head bias ``-m_h (i - j)``, slopes a geometric sequence.

Every figure is computed by the library's own modules (:func:`~attnkit.layers.positional.sinusoid_table`,
:class:`~attnkit.positions.rotary.RotaryEmbedding`, :class:`~attnkit.positions.alibi.ALiBi`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from attnkit.layers.positional import sinusoid_table

POSITIONS, D_MODEL = 128, 64
FIGURES = ("sinusoidal.png", "sinusoidal_similarity.png", "rotary.png", "alibi.png")


def distance_similarity(table: torch.Tensor) -> torch.Tensor:
    """``PE(p) . PE(p + k)`` averaged over p, for every offset k (``(T,)``)."""
    t = table.shape[0]
    return torch.stack([(table[: t - k] * table[k:]).sum(-1).mean() for k in range(t)])


def rotary_scores(head_dim: int = D_MODEL, distances: int = 512) -> torch.Tensor:
    """Score ``q_m . k_n`` of rotated ones-vectors against ``m - n`` for ``0..distances-1`` (``(distances,)``)."""
    from attnkit.positions.rotary import RotaryEmbedding

    rope = RotaryEmbedding(head_dim)
    ones = torch.ones(1, 1, distances, head_dim)
    q, k = rope(ones, ones, torch.arange(distances))
    return (q[0, 0, -1:] * k[0, 0].flip(0)).sum(-1)  # the last query against keys 0, 1, ... positions back


def alibi_bias(n_heads: int = 8, t: int = 32) -> torch.Tensor:
    """The causal ALiBi bias ``(H, T, T)`` of the library's module (future keys left at 0; they are masked)."""
    from attnkit.positions.alibi import ALiBi

    q = torch.zeros(1, n_heads, t, 1)
    return ALiBi(n_heads).bias(q, q, torch.arange(t), causal=True, scale=1.0)[0]


def write_positions(out: str | os.PathLike) -> list[Path]:
    """Write :data:`FIGURES` (``sinusoidal.png``, ``sinusoidal_similarity.png``, ``rotary.png``, ``alibi.png``) into ``out``.

    Args:
        out: the directory (created if missing).

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = sinusoid_table(POSITIONS, D_MODEL)
    written = []

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    im = ax.imshow(table.numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xlabel("dimension i")
    ax.set_ylabel("position")
    ax.set_title(f"Sinusoidal positions (d_model = {D_MODEL})")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    written.append(out / "sinusoidal.png")
    fig.savefig(written[-1])
    plt.close(fig)

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4), dpi=100)
    sim = table @ table.T / D_MODEL * 2  # a position with itself: 1
    im = a.imshow(sim.numpy(), cmap="viridis", interpolation="nearest")
    a.set_title("PE(p) . PE(q), scaled")
    a.set_xlabel("position q")
    a.set_ylabel("position p")
    fig.colorbar(im, ax=a)
    b.plot((distance_similarity(table) / D_MODEL * 2).numpy())
    b.set_title("mean PE(p) . PE(p + k) by offset k")
    b.set_xlabel("offset k")
    fig.tight_layout()
    written.append(out / "sinusoidal_similarity.png")
    fig.savefig(written[-1])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(rotary_scores().numpy())
    ax.set_xlabel("relative distance m - n")
    ax.set_ylabel("q_m . k_n")
    ax.set_title(f"Rotary: score of ones-vectors by distance (head_dim = {D_MODEL})")
    fig.tight_layout()
    written.append(out / "rotary.png")
    fig.savefig(written[-1])
    plt.close(fig)

    bias = alibi_bias()
    from attnkit.positions.alibi import alibi_slopes

    slopes = alibi_slopes(bias.shape[0])
    fig, axes = plt.subplots(1, 4, figsize=(10, 3), dpi=100)
    for ax, h in zip(axes, (0, 2, 4, 7)):
        im = ax.imshow(bias[h].numpy(), cmap="magma", interpolation="nearest")  # each head on its own scale
        ax.set_title(f"ALiBi head {h}: m = 1/{round(1 / float(slopes[h]))}", fontsize=9)
        ax.set_xlabel("key j", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.7)
    axes[0].set_ylabel("query i", fontsize=8)
    fig.tight_layout()
    written.append(out / "alibi.png")
    fig.savefig(written[-1])
    plt.close(fig)
    return written
