"""Attention as PNG heatmaps (matplotlib): one image per attention group and layer, a panel per head."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from attnkit.viz.payload import LABELS, Group

PANEL = 3.0  # inches per head panel
DPI = 100
COLUMNS = 4


def figure_size(n_heads: int) -> tuple[int, int]:
    """The ``(width, height)`` in pixels of one layer's image with ``n_heads`` panels."""
    cols = min(COLUMNS, n_heads)
    rows = -(-n_heads // cols)
    return int(cols * PANEL * DPI), int(rows * PANEL * DPI)


def write_heatmaps(groups: Sequence[Group], out: str | os.PathLike) -> list[Path]:
    """Write ``GROUP_layerN.png`` for every group and layer into directory ``out``.

    Rows are queries, columns keys; darker is more weight (colour by the square root of the
    weight, as in the viewer, so that small weights stay visible). Token labels are drawn when a
    sequence has at most 40 tokens.

    Args:
        groups: the attention groups (the viewer's data).
        out: the directory (created if missing).

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import PowerNorm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for g in groups:
        for layer, w in enumerate(g.layers):
            h = w.shape[0]
            cols = min(COLUMNS, h)
            rows = -(-h // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(cols * PANEL, rows * PANEL), dpi=DPI, squeeze=False)
            for n, ax in enumerate(axes.flat):
                if n >= h:
                    ax.axis("off")
                    continue
                ax.imshow(w[n].float().numpy(), cmap="Blues", norm=PowerNorm(0.5, vmin=0.0, vmax=1.0), interpolation="nearest", aspect="auto")
                ax.set_title("rollout" if g.name == "rollout" else f"head {n}", fontsize=8)
                labelled = len(g.q_tokens) <= 40 and len(g.k_tokens) <= 40
                ax.set_xticks(range(len(g.k_tokens)) if labelled else [])
                ax.set_yticks(range(len(g.q_tokens)) if labelled else [])
                if labelled:
                    ax.set_xticklabels(g.k_tokens, rotation=90, fontsize=5)
                    ax.set_yticklabels(g.q_tokens, fontsize=5)
            fig.suptitle(f"{LABELS.get(g.name, g.name)}, layer {layer}", fontsize=10)
            fig.tight_layout()
            path = out / f"{g.name}_layer{layer}.png"
            fig.savefig(path, dpi=DPI)  # no bbox_inches: the image keeps the figure's size
            plt.close(fig)
            written.append(path)
    return written
