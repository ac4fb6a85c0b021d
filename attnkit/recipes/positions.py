"""Length extrapolation (Press et al. 2022, section 4, at character scale): the char-shakespeare GPT trained at
context 256 with each positional kind, for evaluation at longer contexts (``benchmarks/length_extrapolation.py``).

Each recipe is ``shakespeare-char`` with ``model.attention.position`` set; ``learned`` is the recipe's own
learned absolute positions. Any other setting of a position (``--set model.attention.position.scaling=ntk``)
applies to these as to every model.
"""

from __future__ import annotations

import dataclasses

from attnkit.models.transformer import AttentionConfig
from attnkit.positions.config import PositionConfig
from attnkit.recipes import get, register
from attnkit.recipes.base import Recipe

BASE = "shakespeare-char"
# recipe suffix -> position; the relative kinds clip at the training context (BERT's) or use T5's buckets.
# T5's table trains at 30 times the learning rate (3e-2 at the peak): past the training length every key beyond
# max_distance shares the last bucket, which must reach a strongly negative bias to keep attention local, and Adam
# moves a weight by about the learning rate per step (attnkit.positions.t5_bias.T5RelativeBias, lr_scale).
KINDS: dict[str, PositionConfig] = {
    "learned": PositionConfig(kind="none"),
    "rotary": PositionConfig(kind="rotary"),
    "alibi": PositionConfig(kind="alibi"),
    "t5-bias": PositionConfig(kind="t5_bias", n_buckets=32, max_distance=128, t5_lr_scale=30.0),
    "relative-key": PositionConfig(kind="relative_key", max_distance=256),
    "xl-relative": PositionConfig(kind="xl_relative"),
}


def extrapolation_recipes() -> list[Recipe]:
    """One ``length-extrapolation-<kind>`` recipe per positional kind."""
    base = get(BASE)
    out = []
    for name, position in KINDS.items():
        model = base.model
        assert model is not None
        attention = AttentionConfig(kind=model.attention.kind, dropout=model.attention.dropout, params=dict(model.attention.params),
                                    position=position)
        out.append(dataclasses.replace(
            base, name=f"length-extrapolation-{name}", figure="",
            summary=f"tiny Shakespeare, characters, context 256, {name} positions: {BASE} for the length-extrapolation table",
            model=dataclasses.replace(model, attention=attention),
        ))
    return out


for recipe in extrapolation_recipes():
    register(recipe)
