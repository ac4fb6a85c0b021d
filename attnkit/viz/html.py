"""One self-contained HTML page showing attention: head view, model view and matrix view.

The head view follows bertviz's (Vig 2019, "A Multiscale Visualization of Attention in the
Transformer Model"): lines from each query token to the key tokens, one colour per head,
opacity proportional to the weight. The model view shows every layer and head at once, the
matrix view one layer's weights as a heatmap. Everything the page needs (data, script, style)
is inside it; it makes no network request.
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Sequence

from attnkit.io import atomic_write_text
from attnkit.viz.assets import CSS, JS
from attnkit.viz.payload import Group

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<div id="attnkit-viewer" data-n-groups="{n_groups}">
<h1>{title}</h1>
<div class="controls">
  <label>Attention <select id="ak-group"></select></label>
  <label>Layer <select id="ak-layer"></select></label>
  <span>Heads <span id="ak-heads" class="heads"></span> <button id="ak-all" type="button">all</button></span>
</div>
<nav><button data-view="head" type="button">Head view</button> <button data-view="model" type="button">Model view</button>
<button data-view="matrix" type="button">Matrix view</button></nav>
<p id="ak-hint" class="hint"></p>
<p id="ak-error" class="error"></p>
<div id="ak-stage"><canvas id="ak-canvas" width="1" height="1"></canvas></div>
<details><summary>Tokens</summary><ol id="ak-tokens" start="0"></ol></details>
</div>
<script type="application/json" id="attnkit-data">{data}</script>
<script>{js}</script>
</body>
</html>
"""


def render(groups: Sequence[Group], title: str = "Attention") -> str:
    """The page for ``groups`` as a string.

    Args:
        groups: the attention groups to show (the first is shown first).
        title: the page's heading.

    Returns:
        The HTML text.
    """
    if not groups:
        raise ValueError("no attention to show")
    data = json.dumps({"groups": [g.payload() for g in groups]}, separators=(",", ":"))
    data = data.replace("</", "<\\/")  # a token like "</script>" must not end the data block
    return TEMPLATE.format(title=html.escape(title), css=CSS, js=JS, data=data, n_groups=len(groups))


def write(path: str | os.PathLike, groups: Sequence[Group], title: str = "Attention") -> Path:
    """Write the page for ``groups`` to ``path`` (built beside it and renamed into place: a failure leaves an old file as it was).

    Args:
        path: the ``.html`` file to write.
        groups: the attention groups to show.
        title: the page's heading.

    Returns:
        The path written.
    """
    path = Path(path)
    atomic_write_text(path, render(groups, title))
    return path
