"""Moving batches to the device."""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch
from torch import Tensor

B = TypeVar("B", bound="TensorBatch")


def to_device(t: Tensor | None, device: torch.device | str) -> Tensor | None:
    """``t`` on ``device`` (``None`` stays ``None``).

    A host tensor bound for CUDA goes through pinned memory and an asynchronous copy: a copy
    from pageable memory first waits for the work already queued on the GPU, which stalls
    the training loop at every batch.
    """
    if t is None:
        return None
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class TensorBatch:
    """Base of the tasks' batch dataclasses: :meth:`to` moves every tensor field, keeps the rest."""

    def to(self: B, device: torch.device | str) -> B:
        """A copy of the batch whose tensor fields are on ``device`` (through :func:`to_device`)."""
        moved = {f.name: to_device(v, device) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                 if isinstance(v := getattr(self, f.name), Tensor)}
        return dataclasses.replace(self, **moved)  # type: ignore[type-var]
