"""The steps that every Hugging Face encoder-decoder interchange (:mod:`attnkit.hub.t5`,
:mod:`attnkit.hub.bart`, and through :mod:`attnkit.hub.sinusoidal` :mod:`attnkit.hub.marian` and
:mod:`attnkit.hub.pegasus`) shares around its own key map and config translation; those of BART's layers share
more in :mod:`attnkit.hub.bart`.

Import: :func:`read_source` reads a directory's ``config.json`` and safetensors (or takes a config dict
and its state dict), :func:`checked_config` turns the translated config into the model's expected
state dict, and :func:`load_converted` maps the weights onto a new
:class:`~attnkit.models.transformer.Transformer`, strictly. Export: :func:`write_hf_directory` writes
the translated config and weights (and a tokenizer) atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from safetensors.torch import save_file
from torch import Tensor

from attnkit.errors import CheckpointError, ConfigError
from attnkit.hub.keymap import KeyMap, read_hf_config, read_hf_weights
from attnkit.io import atomic_directory
from attnkit.models.base import CONFIG_NAME, WEIGHTS_NAME, check_size
from attnkit.models.transformer import Transformer, TransformerConfig


def read_source(
    caller: str, config: dict[str, Any] | str | os.PathLike, state: dict[str, Tensor] | None
) -> tuple[dict[str, Any], dict[str, Tensor], str, str]:
    """The config dict and state dict of a Hugging Face checkpoint, with the names errors give them.

    Args:
        caller: the importing function's name, for the error of a dict without weights.
        config: a directory (``config.json`` + ``model.safetensors`` or its shards) or a config dict.
        state: the state dict, with ``config`` a dict.

    Returns:
        ``(config dict, state dict, config's name, weights' name)``: file paths for a directory,
        ``"config"`` and ``"state dict"`` otherwise.

    Raises:
        CheckpointError: a config dict without its state dict, invalid JSON, or missing weights.
    """
    if isinstance(config, dict):
        if state is None:
            raise CheckpointError(f"{caller}: a config dict needs its state dict")
        return config, state, "config", "state dict"
    data, cfg_path = read_hf_config(config)
    weights, weights_path = read_hf_weights(config)
    return data, weights, str(cfg_path), str(weights_path)


def checked_config(make: Callable[[], TransformerConfig], cfg_source: str) -> tuple[TransformerConfig, dict[str, Tensor]]:
    """The config that ``make`` translates and the state dict its model expects (shapes and names).

    Args:
        make: builds the config from the checkpoint's config dict.
        cfg_source: the config's name, prefixed to a size error.

    Returns:
        ``(config, expected state dict)``.

    Raises:
        CheckpointError: the config is refused or too large (the :class:`ConfigError`'s message).
    """
    try:
        c = make()
        return c, check_size(Transformer, c, prefix=f"{cfg_source}: ").state_dict()
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


def load_converted(
    c: TransformerConfig, keys: KeyMap, state: dict[str, Tensor], expected: dict[str, Tensor], weights_source: str, optional: set[str]
) -> Transformer:
    """A new :class:`Transformer` of config ``c`` holding ``state`` mapped through ``keys``.

    Args:
        c: the config.
        keys: the checkpoint's key map.
        state: the checkpoint's state dict (already adjusted to the map's names and shapes).
        expected: the model's state dict, from :func:`checked_config`.
        weights_source: the weights' name, for errors.
        optional: attnkit keys the checkpoint may lack (tied copies, which follow their originals).

    Returns:
        The model.

    Raises:
        CheckpointError: a missing, surplus or misshapen key.
    """
    converted = keys.to_attnkit(state, expected, weights_source, optional=optional)
    model = Transformer(c)
    missing, _ = model.load_state_dict(converted, strict=False)
    assert set(missing) <= optional, missing  # the tied copies follow their originals
    return model


def write_hf_directory(
    path: str | os.PathLike, hf_config: dict[str, Any], hf_state: dict[str, Tensor], tokenizer: str | os.PathLike | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and optionally ``tokenizer.json`` as the directory ``path``, atomically.

    Args:
        path: the directory.
        hf_config: the Hugging Face config dict.
        hf_state: the Hugging Face state dict (contiguous tensors, no shared storage).
        tokenizer: a ``tokenizer.json`` to copy in.
        extra_files: name -> text of more files (a translation model's ``translation.json``).

    Returns:
        ``path``.
    """

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        save_file(hf_state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / "tokenizer.json")
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text, encoding="utf-8")

    atomic_directory(Path(path), fill)
    return Path(path)


__all__ = ["checked_config", "load_converted", "read_source", "write_hf_directory"]
