"""Checkpoint averaging (Vaswani et al. 2017, section 6.1).

"For the base models, we used a single model obtained by averaging the last 5 checkpoints,
which were written at 10-minute intervals." The average is taken parameter by parameter
over the weights saved in ``model.safetensors``; it is computed in float64 and cast back to
each tensor's dtype. Integer tensors (none in attnkit's models today) are taken from the
newest checkpoint, as an average of them has no meaning.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from attnkit.errors import CheckpointError
from attnkit.models.base import TOKENIZER_NAME, WEIGHTS_NAME, PretrainedModel, load, load_state_strict, load_weights


def average_checkpoints(paths: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the weights of several checkpoint directories.

    Args:
        paths: checkpoint directories (each with ``model.safetensors``), oldest first.

    Returns:
        A state dict with the keys of the checkpoints; floating tensors are the mean over
        ``paths`` in their original dtype, other tensors come from the last path.

    Raises:
        CheckpointError: no paths, a missing or unreadable file, or checkpoints whose keys
            or shapes differ (naming the first mismatch).
    """
    if not paths:
        raise CheckpointError("no checkpoints to average; train with save_every > 0 so that checkpoints are written")
    paths = [Path(p) for p in paths]
    first = load_weights(paths[0] / WEIGHTS_NAME)
    sums = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in first.items()}
    for path in paths[1:]:
        state = load_weights(path / WEIGHTS_NAME)
        if set(state) != set(sums):
            diff = sorted(set(state) ^ set(sums))
            raise CheckpointError(f"{path} and {paths[0]} hold different weights (e.g. {diff[0]!r}); average checkpoints of one run only")
        for k, v in state.items():
            if v.shape != sums[k].shape:
                raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)} but {tuple(sums[k].shape)} in {paths[0]}")
            sums[k] = sums[k] + v.to(torch.float64) if v.is_floating_point() else v
    n = len(paths)
    return {k: (v / n).to(first[k].dtype) if first[k].is_floating_point() else v for k, v in sums.items()}


def save_averaged(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> PretrainedModel:
    """Average ``paths`` and save the result as a model directory ``out`` (with the newest tokenizer).

    Returns:
        The averaged model (on the CPU).
    """
    paths = [Path(p) for p in paths]
    state = average_checkpoints(paths)
    model = load(paths[-1])  # config and architecture of the newest checkpoint
    load_state_strict(model, state, f"average of {len(paths)} checkpoints")
    tokenizer = paths[-1] / TOKENIZER_NAME
    model.save_pretrained(out, tokenizer=tokenizer if tokenizer.is_file() else None)
    return model

