"""The dev-set pass every task's evaluation runs: a loss over fixed batches, without gradients.

Each batch's loss is a mean over its counted targets (tokens, labels or chosen positions), so
the dev loss is the mean over all of them, each batch weighted by its count:

    loss = sum_b loss_b * n_b / sum_b n_b

The sums stay on the device (float64 where the device has it) until the end: one host
synchronisation per pass, not one per batch. A step may also return something per batch
(logits, hit counts), collected in order for the task's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar

import torch
from torch import Tensor

B = TypeVar("B")


@dataclass
class DevPass:
    """What :func:`dev_pass` found: the count-weighted mean loss, the count, and each batch's extra output."""

    loss: float
    count: int
    outputs: list[Any] = field(default_factory=list)


@torch.no_grad()
def dev_pass(step: Callable[[B], tuple[Any, ...]], batches: Iterable[B]) -> DevPass:
    """Run ``step`` over ``batches`` without gradients and weight the losses by their counts.

    Args:
        step: ``batch -> (mean loss, count)`` or ``(mean loss, count, output)``; the count is
            a Python int or a tensor, the output anything (kept in batch order).
        batches: the validation batches, in a fixed order.

    Returns:
        A :class:`DevPass`; its loss is 0 when nothing was counted.
    """
    total: Tensor | None = None
    count: Tensor | int = 0
    outputs: list[Any] = []
    for batch in batches:
        loss, n, *rest = step(batch)
        if total is None:
            total = torch.zeros((), dtype=torch.float32 if loss.device.type == "mps" else torch.float64, device=loss.device)
        total += loss.detach().to(total.dtype) * n
        count = count + n
        if rest:
            outputs.append(rest[0])
    n_all = int(count)
    return DevPass(loss=float(total) / n_all if total is not None and n_all else 0.0, count=n_all, outputs=outputs)
