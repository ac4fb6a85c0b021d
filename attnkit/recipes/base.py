"""A recipe: a named, typed run (model, training and data configs, plus the task that trains them).

A recipe is data, not a script: frozen configs that the one run path (:func:`attnkit.runs.run`)
executes for its ``task``. Every figure attnkit publishes names the recipe that produced it, so
``attnkit train TASK --recipe NAME`` reproduces it; ``--set key=value`` changes any field of it.

``files`` names the data fields that hold paths relative to a data root (``--data-root``), so a
recipe can say ``multi30k`` and run wherever the corpora live. ``on_cuda`` holds overrides that
apply only when the run's device is a CUDA GPU (speed strategies such as CUDA graphs that need
one). ``quick`` is a smoke variant of the same recipe (tiny sizes, a few steps) that runs on a
CPU in seconds; CI runs the quick variant of every recipe. ``before`` names recipes that run
first, each feeding the directory of the model it trains to one data field of this recipe (a
task-adaptive pretraining stage feeding ``data.model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attnkit.config import Config, apply_overrides


@dataclass(frozen=True)
class Stage:
    """A recipe that runs before another one and hands it a trained model."""

    recipe: str
    feeds: str  # the dotted key of the later recipe that receives ``STAGE_OUT/model`` (``data.model``)


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A named run: the task, its configs and where its figure stands.

    Args:
        name: the exact name ``--recipe`` takes.
        task: the task that trains it (``reverse``, ``translate``, ``lm``, ``mlm``, ``listops``,
            ``classify``, ``ner``, ``qa``).
        summary: one line: what it trains, on what data.
        train: the training config.
        data: the task's data config.
        model: the model config; ``None`` takes the task's default (for fine-tuning: the
            architecture of the model being fine-tuned).
        figure: the figure the recipe reached, as published in BENCHMARKS.md ("" if none).
        files: data-config keys (``data.text``) whose values are paths under the data root.
        on_cuda: ``--set`` assignments applied only when training on a CUDA device.
        quick: ``--set`` assignments of the quick CPU variant.
        before: stages that run first (see :class:`Stage`).
        peft: the adapter section (:class:`~attnkit.peft.PEFTConfig`) of a parameter-efficient run; None: none.
    """

    name: str
    task: str
    summary: str
    train: Config
    data: Config
    model: Config | None = None
    figure: str = ""
    files: tuple[str, ...] = ()
    on_cuda: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    before: tuple[Stage, ...] = field(default_factory=tuple)
    peft: Config | None = None

    def configs(self, *, quick: bool = False) -> dict[str, Any]:
        """The recipe's configs by name (``model`` only where the recipe fixes one); ``quick`` applies the smoke variant."""
        cfgs: dict[str, Any] = {"train": self.train, "data": self.data}
        if self.model is not None:
            cfgs = {"model": self.model, **cfgs}
        if self.peft is not None:
            cfgs["peft"] = self.peft
        return apply_overrides(list(self.quick), cfgs) if quick and self.quick else cfgs
