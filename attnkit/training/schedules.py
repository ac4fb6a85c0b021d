"""Learning-rate schedules as pure functions of the 1-based optimizer step.

The Transformer's schedule (Vaswani et al. 2017, "Attention Is All You Need",
section 5.3) is :func:`noam`; the others are the common warmup-then-decay
multipliers used by later work (BERT's linear decay, cosine decay).

Step convention, used everywhere in this module: optimizer step number ``s`` is
1-based, and the learning rate *used by* step ``s`` is ``schedule(s)``.
:func:`build_scheduler` wraps a schedule in a :class:`~torch.optim.lr_scheduler.LambdaLR`
that honours this convention: right after construction the optimizer's lr is
``schedule(1)``; after ``k`` calls of ``optimizer.step(); scheduler.step()`` it is
``schedule(k + 1)``, the lr of the next step, and ``scheduler.get_last_lr()``
returns the same value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from attnkit.errors import ConfigError

ScheduleKind = Literal["noam", "linear", "cosine", "constant"]
SCHEDULE_KINDS: tuple[str, ...] = ("noam", "linear", "cosine", "constant")


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is not allowed; expected an integer >= {minimum}")


def _check_decay_span(warmup: int, total: int, total_name: str = "total") -> None:
    _check_int("warmup", warmup, 0)
    _check_int(total_name, total, 1)
    if total <= warmup:
        raise ConfigError(f"{total_name}={total!r} is not allowed; it must exceed warmup={warmup!r}")


def noam(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    """The Transformer learning rate (Vaswani et al. 2017, section 5.3, eq. 3).

    ``lrate = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``: linear
    increase for the first ``warmup`` steps, then decay with the inverse square root
    of the step number. The peak, ``factor * (d_model * warmup)^-0.5``, is at
    ``step == warmup``. The paper uses ``factor = 1`` and ``warmup = 4000``.

    Args:
        step: 1-based optimizer step. Step 0 is treated as step 1, so the formula
            never divides by zero.
        d_model: model width, the ``d_model`` of the paper.
        warmup: number of warmup steps, ``warmup_steps`` in the paper (>= 1).
        factor: multiplier on the whole formula (1.0 in the paper).

    Returns:
        The absolute learning rate for that step.
    """
    _check_int("step", step, 0)
    _check_int("d_model", d_model, 1)
    _check_int("warmup", warmup, 1)
    if not factor > 0:
        raise ConfigError(f"factor={factor!r} is not allowed; expected a number > 0")
    s = max(step, 1)
    return factor * d_model**-0.5 * min(s**-0.5, s * warmup**-1.5)


def _warmup(step: int, warmup: int) -> float:
    """Linear warmup multiplier: 0 at step 0, 1.0 from ``step == warmup`` on."""
    if warmup == 0 or step >= warmup:
        return 1.0
    return step / warmup


def linear_warmup_linear_decay(step: int, warmup: int, total: int) -> float:
    """Linear warmup to the peak, then linear decay to zero (as in BERT's training).

    Args:
        step: 1-based optimizer step (0 gives 0.0 when ``warmup > 0``).
        warmup: steps of linear increase; the multiplier is 1.0 at ``step == warmup``.
        total: step at which the multiplier reaches 0.0; it stays 0.0 after.
            Must exceed ``warmup``.

    Returns:
        The multiplier of the peak learning rate, in [0, 1].
    """
    _check_int("step", step, 0)
    _check_decay_span(warmup, total)
    if step <= warmup:
        return _warmup(step, warmup)
    return max(0.0, (total - step) / (total - warmup))


def linear_warmup_cosine_decay(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Linear warmup to the peak, then half-cosine decay to ``min_ratio`` of the peak.

    After warmup the multiplier is
    ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` with
    ``p = (step - warmup) / (total - warmup)`` clipped to [0, 1].

    Args:
        step: 1-based optimizer step (0 gives 0.0 when ``warmup > 0``).
        warmup: steps of linear increase; the multiplier is 1.0 at ``step == warmup``.
        total: step at which the multiplier reaches ``min_ratio``; it stays there after.
            Must exceed ``warmup``.
        min_ratio: final multiplier, in [0, 1].

    Returns:
        The multiplier of the peak learning rate, in [0, 1].
    """
    _check_int("step", step, 0)
    _check_decay_span(warmup, total)
    if not 0.0 <= min_ratio <= 1.0:
        raise ConfigError(f"min_ratio={min_ratio!r} is not allowed; expected a number in [0, 1]")
    if step <= warmup:
        return _warmup(step, warmup)
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def constant(step: int, warmup: int = 0) -> float:
    """A constant multiplier of 1.0, after an optional linear warmup.

    Args:
        step: 1-based optimizer step.
        warmup: steps of linear increase from 0 (0 means no warmup: always 1.0).

    Returns:
        The multiplier of the peak learning rate, in [0, 1].
    """
    _check_int("step", step, 0)
    _check_int("warmup", warmup, 0)
    return _warmup(step, warmup)


def build_scheduler(
    optimizer: Optimizer,
    kind: ScheduleKind,
    *,
    warmup: int,
    total_steps: int,
    d_model: int | None = None,
    factor: float = 1.0,
    min_ratio: float = 0.0,
) -> LambdaLR:
    """Wrap a schedule of this module in a ``LambdaLR``.

    Call ``scheduler.step()`` once after every ``optimizer.step()``. Optimizer step
    ``s`` (1-based) then runs with lr ``noam(s, d_model, warmup, factor)`` for
    ``"noam"``, and with ``base_lr * multiplier(s)`` for the others, where
    ``base_lr`` is the param group's lr when the scheduler is built (the peak).

    For ``"noam"`` the formula gives the absolute learning rate, so this function
    **sets every param group's ``lr`` and ``initial_lr`` to 1.0** (to its ``lr_scale``
    where layer-wise decay gave it one, :mod:`attnkit.training.optim`) before building
    the scheduler; the lr the optimizer was built with is ignored (scale with
    ``factor`` instead). Every other kind multiplies each group's own initial lr, so
    groups at different lrs keep their ratios.

    Args:
        optimizer: the optimizer whose param groups are scheduled.
        kind: ``"noam"`` (:func:`noam`), ``"linear"`` (:func:`linear_warmup_linear_decay`),
            ``"cosine"`` (:func:`linear_warmup_cosine_decay`, decaying to 0) or
            ``"constant"`` (:func:`constant`, with ``warmup``).
        warmup: warmup steps (>= 1 for ``"noam"``, >= 0 otherwise).
        total_steps: total optimizer steps (>= 1; must exceed ``warmup`` for
            ``"linear"`` and ``"cosine"``; not used by ``"noam"`` and ``"constant"``).
        d_model: model width; required for ``"noam"``.
        factor: multiplier of the noam formula; only used by ``"noam"``.
        min_ratio: floor of the cosine decay as a fraction of the peak (nanoGPT uses 0.1).

    Returns:
        The scheduler, already applied: the optimizer's lr is that of step 1.

    Raises:
        ValueError: (a :class:`~attnkit.errors.ConfigError`) naming the bad argument.
    """
    if kind not in SCHEDULE_KINDS:
        raise ConfigError(f"kind={kind!r} is not allowed; expected one of {', '.join(map(repr, SCHEDULE_KINDS))}")
    _check_int("total_steps", total_steps, 1)
    schedule: Callable[[int], float]
    if kind == "noam":
        if d_model is None:
            raise ConfigError("d_model=None is not allowed; the noam schedule needs d_model")
        noam(1, d_model, warmup, factor)  # validates the arguments
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] = group.get("lr_scale", 1.0)

        def schedule(s: int) -> float:
            return noam(s, d_model, warmup, factor)

    elif kind == "linear":
        _check_decay_span(warmup, total_steps, "total_steps")

        def schedule(s: int) -> float:
            return linear_warmup_linear_decay(s, warmup, total_steps)

    elif kind == "cosine":
        _check_decay_span(warmup, total_steps, "total_steps")

        def schedule(s: int) -> float:
            return linear_warmup_cosine_decay(s, warmup, total_steps, min_ratio)

    else:
        _check_int("warmup", warmup, 0)

        def schedule(s: int) -> float:
            return constant(s, warmup)

    # LambdaLR evaluates its lambda at 0 on construction and at k after k scheduler
    # steps; that value is used by the next optimizer step, number k + 1.
    return LambdaLR(optimizer, lr_lambda=lambda k: schedule(k + 1))
