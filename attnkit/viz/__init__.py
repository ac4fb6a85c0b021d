"""Figures of attention: an offline browser viewer, PNG heatmaps, kernel patterns and position encodings.

* :func:`attnkit.viz.attention.groups_for_text` runs a model on a text and collects its attention;
* :func:`attnkit.viz.html.write` writes the self-contained viewer page;
* :func:`attnkit.viz.heatmap.write_heatmaps` the same data as PNG heatmaps;
* :func:`attnkit.viz.patterns.write_patterns` and :func:`attnkit.viz.positions.write_positions`
  the figures of kernels and position encodings.
"""

from attnkit.viz.payload import Group

__all__ = ["Group"]
