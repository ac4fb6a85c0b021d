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
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from attnkit.config import Config
from attnkit.errors import CheckpointError, ConfigError
from attnkit.io import atomic_directory

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"

# The deepest stack a config may ask for: each layer is a Python module built one at a time
# (even shapes-only, on the meta device), so a typo of 10^7 layers would never finish building.
MAX_LAYERS = 1024

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

    def save_pretrained(self, path: str | os.PathLike, *, tokenizer: Any = None, extra_files: dict[str, str] | None = None,
                        fill_more: Callable[[Path], None] | None = None) -> Path:
        """Write ``config.json``, ``model.safetensors`` and (optionally) the tokenizer atomically.

        The directory is complete (every file written and flushed) before it gets the name ``path``;
        an existing ``path`` is replaced, so callers that take ``path`` from a user check it first.

        Args:
            path: the directory to write.
            tokenizer: anything with ``save(path)`` (a ``tokenizers.Tokenizer``) or a path to copy.
            extra_files: name -> text of more files to place in the directory.
            fill_more: called with the directory under construction to add more files before it is renamed.

        Returns:
            ``path``.
        """
        path = Path(path)

        def fill(tmp: Path) -> None:
            (tmp / CONFIG_NAME).write_text(json.dumps({"model_type": self.model_type, **self.config.to_dict()}, indent=2, sort_keys=True) + "\n")
            save_file(unique_state_dict(self), str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "attnkit_model": self.model_type})
            if tokenizer is not None:
                if isinstance(tokenizer, (str, os.PathLike)):
                    shutil.copyfile(tokenizer, tmp / TOKENIZER_NAME)
                else:
                    tokenizer.save(str(tmp / TOKENIZER_NAME))
            for name, text in (extra_files or {}).items():
                (tmp / name).write_text(text)
            if fill_more is not None:
                fill_more(tmp)

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
    if path.is_symlink() and not path.exists():
        raise CheckpointError(f"{path} is a symbolic link to {os.readlink(path)}, which does not exist (or is a loop of links)")
    if not path.exists():
        old = path.with_name(path.name + ".old")
        if old.is_dir():
            raise CheckpointError(f"checkpoint directory {path} does not exist, but {old} does (the previous copy kept by a save "
                                  f"that was interrupted); rename it to {path.name} to use it")
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
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg_path} holds a JSON {type(data).__name__}, not an object of settings; the file is not a model config")
    if "model_type" not in data:
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
    weights = path / WEIGHTS_NAME
    header = read_header(weights)
    try:
        meta = meta_model(cls, config)
        check_header(meta, header, str(weights))
        check_size(cls, config, map_location, prefix=f"{path / CONFIG_NAME}: ",
                   fix="the saved model does not fit there (or its config.json is wrong); load it where more memory is free")
    except ConfigError as e:
        raise CheckpointError(f"{path / CONFIG_NAME}: {e}" if not str(e).startswith(str(path)) else str(e)) from None
    model = cls(config)
    state = load_weights(weights)
    load_state_strict(model, state, str(weights))
    check_finite(model, str(weights))
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
    from attnkit.layers.moe import ExpertLinear  # stacked expert weights: each expert's slice as one Linear

    for name, m in module.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        if isinstance(m, (nn.Linear, nn.Embedding, ExpertLinear)):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# -- size guards: shapes from the config and the safetensors header, before any allocation ----------------


def meta_model(cls: type[nn.Module], config: Any) -> nn.Module:
    """``cls(config)`` on the meta device: every parameter's shape and dtype, no memory for the values.

    Raises:
        ConfigError: the sizes overflow a tensor's element count, or a layer refuses its parameters.
    """
    try:
        with torch.device("meta"):
            return cls(config)
    except (RuntimeError, OverflowError) as e:
        raise ConfigError(f"the model's sizes cannot be built ({str(e).splitlines()[0]}); lower the sizes in its config") from None
    except ValueError as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e).splitlines()[0]) from None


def stored_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict entries that a checkpoint stores (tied copies once, under their first name), without touching data."""
    keep = {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}
    return {k: t for k, t in model.state_dict().items() if k in keep}


def available_memory(device: str | torch.device = "cpu") -> tuple[int, str]:
    """Bytes this process can still allocate on ``device``, and where that figure comes from.

    CPU: ``MemAvailable`` of ``/proc/meminfo`` (else free physical pages), lowered to what an address-space
    limit (``ulimit -v``) leaves. CUDA: the device's free memory.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free), f"free on {dev}"
    avail, where = _meminfo_available()
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            left = max(0, soft - _own_address_space())
            if left < avail:
                avail, where = left, "left under the address-space limit (ulimit -v)"
    except (ImportError, OSError, ValueError):
        pass
    return avail, where


def _meminfo_available() -> tuple[int, str]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available RAM"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free RAM"
    except (ValueError, OSError, AttributeError):
        return 1 << 62, "RAM (unknown)"


def _own_address_space() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def _int_fields(config: Any, prefix: str = "") -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for name, value in getattr(config, "__dict__", {}).items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            out.append((prefix + name, value))
        elif isinstance(value, Config):
            out.extend(_int_fields(value, f"{prefix}{name}."))
    return out


def _blame(config: Any, shape: tuple[int, ...]) -> str:
    """The config key whose value is the largest dimension of ``shape`` (``""`` when none is)."""
    for dim in sorted(shape, reverse=True):
        for name, value in _int_fields(config):
            if value == dim and dim > 1:
                return f"{name}={value}"
    return ""


def model_bytes(model: nn.Module) -> int:
    """Bytes of the parameters and buffers of a (meta) model, each counted once."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def check_size(cls: type[nn.Module], config: Any, device: str | torch.device = "cpu", *, prefix: str = "model.",
               copies: int = 1, fix: str = "lower it") -> nn.Module:
    """Refuse a model whose weights would not fit in memory, before any of them is allocated.

    The model is built on the meta device (shapes only); its parameter and buffer bytes, times
    ``copies`` (training keeps weights, gradients and two Adam moments: 4), are compared with
    :func:`available_memory` of ``device``; for an accelerator, the weights once are also compared
    with the CPU's, where the model is built before it is moved.

    Args:
        cls: the model class.
        config: its config.
        device: where the model will live.
        prefix: put before the config key named in the error (``"model."`` for ``--set`` keys).
        copies: how many tensors of each parameter's size the caller will hold.
        fix: what the message tells the user to do.

    Returns:
        The meta model (for shape checks).

    Raises:
        ConfigError: the model does not fit; the message names the key, the size and the limit.
    """
    meta = meta_model(cls, config)
    weights = model_bytes(meta)
    places = [(torch.device(device), copies)]
    if places[0][0].type != "cpu":  # built on the CPU, then moved: the weights must fit in both places
        places.insert(0, (torch.device("cpu"), 1))
    for place, n in places:
        need = weights * n
        avail, where = available_memory(place)
        if need > avail:
            big_name, big = max(((k, t) for k, t in [*meta.named_parameters(), *meta.named_buffers()]), key=lambda kt: kt[1].numel())
            key = _blame(config, tuple(big.shape))
            what = f"{prefix}{key} makes" if key else "the config makes"
            raise ConfigError(f"{what} {big_name} {tuple(big.shape)} and the model {human_bytes(need)}"
                              f"{' (weights, gradients, Adam moments)' if n > 1 else ''}, more than the {human_bytes(avail)} "
                              f"{where}; {fix}")
    return meta


def check_fits(model: nn.Module, device: str | torch.device, what: str, *, copies: int = 1,
               fix: str = "choose a smaller model or another device") -> None:
    """Refuse to move ``model`` to an accelerator whose free memory cannot hold ``copies`` times its weights.

    Args:
        model: the model, built on the CPU.
        device: where it is to go; the CPU needs no check (the model is already there).
        what: names the model in the message (its directory, or ``"the model"``).
        copies: tensors of each parameter's size that will live there (training with Adam: 4).
        fix: what the message tells the user to do.

    Raises:
        ConfigError: the device's free memory is smaller.
    """
    if torch.device(device).type == "cpu":
        return
    need = model_bytes(model) * copies
    avail, where = available_memory(device)
    if need > avail:
        raise ConfigError(f"{what} takes {human_bytes(need)}{' (weights, gradients, Adam moments)' if copies > 1 else ''}, "
                          f"more than the {human_bytes(avail)} {where}; {fix}")


def read_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every tensor in a safetensors file, from its header only (no data is read)."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; the checkpoint has no weights")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), str(f.get_slice(k).get_dtype())) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0]}); it is truncated or corrupt") from None


def check_header(meta: nn.Module, header: dict[str, tuple[tuple[int, ...], str]], source: str) -> None:
    """Compare the stored shapes and dtypes with those the config implies: the first difference is an error.

    Raises:
        CheckpointError: a key missing or extra, a shape that differs, or weights that are not floating point.
    """
    own = meta.state_dict()
    stored = stored_tensors(meta)
    missing = [k for k in stored if k not in header]
    unexpected = [k for k in header if k not in own]
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{source} does not match the model: {what} (of {len(missing)} missing, {len(unexpected)} unexpected)")
    for k, (shape, dtype) in header.items():
        if shape != tuple(own[k].shape):
            raise CheckpointError(f"{source}: {k} has shape {shape}, the config implies {tuple(own[k].shape)}; "
                                  "config.json and the weights come from different models")
        if own[k].is_floating_point() and dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{source}: {k} is stored as {dtype}, not floating point; quantised or foreign weights are not supported")


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def check_finite(model: nn.Module, source: str) -> None:
    """Refuse parameters holding NaN or infinite values (a diverged or corrupt checkpoint)."""
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise CheckpointError(f"{source}: {name} holds NaN or infinite values; the checkpoint is corrupt or its training diverged")
