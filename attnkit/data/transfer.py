"""Moving batches to the device."""

from __future__ import annotations

import torch
from torch import Tensor


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
