"""Saving and loading models: a directory with ``config.json`` and ``model.safetensors``.

``config.json`` holds ``{"model_type": ..., **config}``; weights are safetensors (never
pickles). Tied weights are stored once. Writes are atomic: the directory is built under a
temporary name and swapped into place (:func:`attnkit.io.atomic_directory`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from attnkit.config import Config
from attnkit.errors import CheckpointError, ConfigError
from attnkit.io import atomic_directory, recover_directory

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"

_MODELS: dict[str, type["PretrainedModel"]] = {}
M = TypeVar("M", bound=type)


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: ``attnkit.load`` rebuilds models saved with ``model_type == name``."""

    def deco(cls: M) -> M:
        _MODELS[name] = cls  # type: ignore[assignment]
        cls.model_type = name  # type: ignore[attr-defined]
        return cls

    return deco


def model_types() -> list[str]:
    return sorted(_MODELS)


def unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared (tied) tensor kept once, under its first name."""
    seen: dict[int, str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        key = t.data_ptr() if t.numel() else id(t)
        if key in seen and t.numel():
            continue
        seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out


class PretrainedModel(nn.Module):
    """Mixin for models that save to / load from a checkpoint directory."""

    model_type: ClassVar[str] = ""
    config_class: ClassVar[type[Config]]
    config: Config

    def save_pretrained(self, path: str | os.PathLike, *, tokenizer: Any = None, extra_files: dict[str, str] | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and (optionally) the tokenizer atomically.

        Args:
            tokenizer: anything with ``save(path)`` (a ``tokenizers.Tokenizer``) or a path to copy.
            extra_files: name -> text of more files to place in the directory.
        """
        path = Path(path)

        def fill(tmp: Path) -> None:
            (tmp / CONFIG_NAME).write_text(json.dumps({"model_type": self.model_type, **self.config.to_dict()}, indent=2, sort_keys=True) + "\n")
            save_file(unique_state_dict(self), str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "attnkit_model": self.model_type})
            if tokenizer is not None:
                if isinstance(tokenizer, (str, os.PathLike)):
                    shutil.copy(tokenizer, tmp / TOKENIZER_NAME)
                else:
                    tokenizer.save(str(tmp / TOKENIZER_NAME))
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)

        atomic_directory(path, fill)
        return path

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> "PretrainedModel":
        """The model saved in attnkit directory ``path``, which must be of this class (or a subclass)."""
        model = load(path, map_location=map_location)
        if not isinstance(model, cls):
            raise CheckpointError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def read_config(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """Return ``(model_type, config dict)`` of a checkpoint directory."""
    path = Path(path)
    recover_directory(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a checkpoint directory (expected a folder with {CONFIG_NAME} and {WEIGHTS_NAME})")
    cfg_path = path / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} has no {CONFIG_NAME}; is it an attnkit checkpoint directory?")
    try:
        data = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise CheckpointError(f"{cfg_path} has no 'model_type'; is it an attnkit checkpoint?")
    model_type = data.pop("model_type")
    if model_type not in _MODELS:
        raise CheckpointError(f"{cfg_path}: unknown model_type {model_type!r}; known: {', '.join(model_types())} "
                              "(Hugging Face directories load with attnkit.load)")
    return model_type, data


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning every failure into a one-line :class:`CheckpointError`."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; the checkpoint has no weights")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); it is truncated or corrupt") from None


def load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> PretrainedModel:
    """Rebuild a model saved by :meth:`PretrainedModel.save_pretrained`, checking every key and shape.

    Only attnkit's own directories; ``attnkit.load`` also reads Hugging Face ones.

    Args:
        path: the checkpoint directory.
        map_location: device to place the model on.

    Returns:
        The model, of the class registered for its ``model_type``.
    """
    path = Path(path)
    model_type, data = read_config(path)
    cls = _MODELS[model_type]
    try:
        config = cls.config_class.from_dict(data)
    except ConfigError as e:
        raise CheckpointError(f"{path / CONFIG_NAME}: {e}") from None
    model = cls(config)
    state = load_weights(path / WEIGHTS_NAME)
    load_state_strict(model, state, str(path / WEIGHTS_NAME))
    return model.to(map_location)


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``: tied copies may be absent, anything else missing or extra is an error."""
    own = model.state_dict()
    tied = set(own) - set(unique_state_dict(model))
    missing = sorted(set(own) - set(state) - tied)
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{source} does not match the model: {what} (of {len(missing)} missing, {len(unexpected)} unexpected)")
    for k, t in state.items():
        if t.shape != own[k].shape:
            raise CheckpointError(f"{source}: {k} has shape {tuple(t.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=False)


def init_normal(module: nn.Module, std: float, *, skip: tuple[str, ...] = ()) -> None:
    """N(0, std) for every Linear and Embedding weight, zero biases, LayerNorm weight 1 and bias 0
    (BERT's and GPT-2's initialisation); submodules named in ``skip`` (and theirs) keep their own."""
    for name, m in module.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
