"""Checkpoint averaging (Vaswani et al. 2017, section 6.1) and uniform model soups.

"For the base models, we used a single model obtained by averaging the last 5 checkpoints,
which were written at 10-minute intervals." The same average over models fine-tuned from one
pretrained checkpoint with different seeds or hyperparameters is the *uniform soup* of
Wortsman et al. 2022 ("Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time", section 2): one model, no extra cost at
inference. It only makes sense for models of one architecture and one label set, started from
one point (``train.init_seed`` fixes a fresh head's weights), which :func:`check_configs` checks
as far as the configs can tell. The average is taken parameter by parameter
over the weights saved in ``model.safetensors``; it is computed in float64 and cast back to
each tensor's dtype. Integer tensors (none in attnkit's models today) are taken from the
newest checkpoint, as an average of them has no meaning.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from attnkit.errors import CheckpointError
from attnkit.models.base import CONFIG_NAME, TOKENIZER_NAME, WEIGHTS_NAME, PretrainedModel, load, load_state_strict, load_weights


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


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    """Dotted names of the config entries where ``a`` and ``b`` differ, dropout rates aside."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            if "dropout" not in k:
                out += _differences(a.get(k), b.get(k), f"{where}.{k}" if where else k)
        return out
    return [] if a == b else [where or "config"]


def check_configs(paths: Sequence[str | os.PathLike]) -> None:
    """Refuse to average models whose ``config.json`` differ (architecture, labels and their order, ...).

    Dropout rates may differ: they do not change what the weights mean.

    Raises:
        CheckpointError: a config is missing or unreadable, or two differ (naming the first entry and both values).
    """
    configs = []
    for p in map(Path, paths):
        try:
            configs.append(json.loads((p / CONFIG_NAME).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise CheckpointError(f"{p / CONFIG_NAME} does not exist; pass model directories written by attnkit") from None
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{p / CONFIG_NAME} is not readable JSON ({e}); the checkpoint is damaged") from None
    for p, cfg in zip(paths[1:], configs[1:]):
        diff = _differences(configs[0], cfg)
        if diff:
            key = diff[0]
            a, b = configs[0], cfg
            for part in key.split("."):
                a, b = (a.get(part) if isinstance(a, dict) else None), (b.get(part) if isinstance(b, dict) else None)
            raise CheckpointError(f"{p} and {paths[0]} differ in {key} ({b!r} vs {a!r}); only models of one architecture "
                                  "and one label set can be averaged")


def save_averaged(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> PretrainedModel:
    """Average ``paths`` and save the result as a model directory ``out`` (with the newest tokenizer).

    Returns:
        The averaged model (on the CPU).
    """
    paths = [Path(p) for p in paths]
    check_configs(paths)
    state = average_checkpoints(paths)
    model = load(paths[-1])  # config and architecture of the newest checkpoint
    load_state_strict(model, state, f"average of {len(paths)} checkpoints")
    tokenizer = paths[-1] / TOKENIZER_NAME
    model.save_pretrained(out, tokenizer=tokenizer if tokenizer.is_file() else None)
    return model

