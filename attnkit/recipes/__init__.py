"""Named recipes: the runs behind every published figure (``attnkit recipes`` lists them).

    attnkit train translate --recipe multi30k-de-en --data-root DATA --out runs/multi30k
    attnkit finetune classify --recipe sst2-minilm --data-root DATA --out runs/sst2

Look-up is by exact name (:func:`get`); :func:`names` lists them in a stable order.
"""

from __future__ import annotations

from attnkit.errors import ConfigError
from attnkit.recipes.base import Recipe, Stage

_RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add ``recipe`` to the catalogue; names are unique."""
    if recipe.name in _RECIPES:
        raise ValueError(f"recipe {recipe.name!r} is registered twice")
    _RECIPES[recipe.name] = recipe
    return recipe


def _load() -> None:
    if not _RECIPES:
        # each module registers its recipes; this order is the catalogue's
        from attnkit.recipes import seq2seq  # noqa: F401
        from attnkit.recipes import lm  # noqa: F401
        from attnkit.recipes import positions  # noqa: F401
        from attnkit.recipes import norms  # noqa: F401
        from attnkit.recipes import exposure  # noqa: F401
        from attnkit.recipes import dialogue  # noqa: F401
        from attnkit.recipes import pretraining  # noqa: F401
        from attnkit.recipes import bert  # noqa: F401
        from attnkit.recipes import albert  # noqa: F401
        from attnkit.recipes import listops  # noqa: F401
        from attnkit.recipes import peft  # noqa: F401
        from attnkit.recipes import denoising  # noqa: F401
        from attnkit.recipes import scratch  # noqa: F401
        from attnkit.recipes import fewshot  # noqa: F401
        from attnkit.recipes import longctx  # noqa: F401


def get(name: str, task: str | None = None) -> Recipe:
    """The recipe called ``name`` (exact match); with ``task``, it must train that task.

    Raises:
        ConfigError: no such recipe, or one for another task.
    """
    _load()
    if name not in _RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; choose one of: {', '.join(_RECIPES)} (attnkit recipes lists them)")
    recipe = _RECIPES[name]
    if task is not None and recipe.task != task:
        raise ConfigError(f"recipe {name!r} trains the {recipe.task!r} task, not {task!r}; run it with the {recipe.task} command")
    return recipe


def names(task: str | None = None) -> list[str]:
    """Every recipe name (of ``task`` only, if given), in catalogue order."""
    _load()
    return [n for n, r in _RECIPES.items() if task is None or r.task == task]


def all_recipes() -> list[Recipe]:
    _load()
    return list(_RECIPES.values())


__all__ = ["Recipe", "Stage", "all_recipes", "get", "names", "register"]
