"""Why LayerNorm and not BatchNorm: the Multi30k model with each normalisation (``model.norm``).

``multi30k-de-en-norm-<kind>`` is ``multi30k-de-en`` with ``model.norm`` set to ``rms`` (RMSNorm, Zhang &
Sennrich 2019) or ``batch`` (BatchNorm over the real tokens of each batch, :mod:`attnkit.layers.batchnorm`);
``multi30k-de-en`` itself is the LayerNorm row. The batch-size sensitivity is ``--set data.max_tokens=...`` (tokens per batch)
on the same recipes.
"""

from __future__ import annotations

import dataclasses

from attnkit.recipes import get, register

BASE = "multi30k-de-en"

for _norm in ("rms", "batch"):
    _base = get(BASE)
    assert _base.model is not None
    register(dataclasses.replace(
        _base, name=f"{BASE}-norm-{_norm}", figure="",
        summary=f"{_base.summary.split(':')[0]}: the {BASE} model with norm={_norm} (the LayerNorm row is {BASE})",
        model=_base.model.replace(norm=_norm),
    ))
