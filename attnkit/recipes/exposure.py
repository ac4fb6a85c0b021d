"""Exposure bias remedies on Multi30k (:mod:`attnkit.training.exposure`), one recipe each.

``multi30k-de-en-scheduled``, ``-self-feed`` and ``-adversarial`` are ``multi30k-de-en`` with
``train.exposure`` set, the same model, data and steps; ``multi30k-de-en`` is the teacher-forced
row. Their steps run without CUDA graphs: the decoder's inputs are chosen anew at every step.
"""

from __future__ import annotations

import dataclasses

from attnkit.recipes import get, register
from attnkit.training.exposure import ExposureConfig

BASE = "multi30k-de-en"

VARIANTS = {
    # Bengio et al. 2015's inverse sigmoid decay, held at 0.7 gold tokens (Mihaylova and Martins 2019: keep it high)
    "scheduled": ("two-pass scheduled sampling, gold probability 500/(500+exp(i/500)) floored at 0.7",
                  ExposureConfig(kind="scheduled", schedule="inverse_sigmoid", k=500.0, min_gold=0.7)),
    "self-feed": ("10% of the decoder's inputs replaced by its own greedy predictions",
                  ExposureConfig(kind="self_feed", prob=0.1)),
    "adversarial": ("decoder input embeddings perturbed along the loss gradient (L2 norm 1 per sentence)",
                    ExposureConfig(kind="adversarial", epsilon=1.0)),
}

for _name, (_what, _exposure) in VARIANTS.items():
    _base = get(BASE)
    assert _base.train is not None
    register(dataclasses.replace(
        _base, name=f"{BASE}-{_name}", figure="", on_cuda=(),
        summary=f"{_base.summary.split(':')[0]}: the {BASE} run with {_what} (teacher forcing is {BASE})",
        train=_base.train.replace(exposure=_exposure),
    ))
