"""Adapter directories: ``adapter_config.json`` + ``adapter_model.safetensors``, peft's format.

An adapter directory holds only what the adapter trained: LoRA's ``A``/``B`` (and DoRA's
magnitudes), a prefix's key/value table or a prompt's embeddings (P-tuning's and the
reparameterised prefix's computed tables, as the papers keep them), and the task head trained
beside it (``modules_to_save``). ``adapter_config.json`` names its base
(``base_model_name_or_path``) and carries peft's fields; attnkit adds the method,
its config, the adapted model's type and config and the base's architecture (in
``attnkit_adapter.json`` beside it), so that loading onto another base is refused with one line.

When the base is a Hugging Face directory (BERT family, GPT-2), tensors are stored under peft's
names (``base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight``,
``prompt_embeddings``, ``base_model.model.classifier.weight``), so ``peft.PeftModel.from_pretrained``
loads the directory onto the Hugging Face model, and peft's own adapters load here. Otherwise
the names are attnkit's module names. The conversion to and from peft's names and config is in
:mod:`attnkit.peft.peft_format`.

Prefix tuning's MLP and P-tuning's prompt encoder train weights that the directory does not keep.
To start them from another library's, a directory may hold ``prompt_encoder.safetensors`` beside
the adapter (:data:`ENCODER_WEIGHTS`): the state dict of peft's ``PrefixEncoder`` or
``PromptEncoder`` under peft's module-local names (``embedding.weight``, ``transform.0.weight``;
``lstm_head.weight_ih_l0``, ``mlp_head.0.weight``), as :func:`save_peft_encoder` writes it from a
``PeftModel``. Only :func:`init_adapter_from` reads it; loading a trained adapter needs only the table.
"""

from __future__ import annotations

import json
import os
import shutil
import types
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from attnkit.errors import CheckpointError, ConfigError
from attnkit.io import atomic_directory, atomic_write
from attnkit.peft.lora import LoRAConfig, lora_layers
from attnkit.peft.names import hf_kind
from attnkit.peft.peft_format import PEFT_TYPES, config_from_peft, fuse_slices, keep_modules, peft_config, peft_names, sliced, split_fused
from attnkit.peft.prefix import PrefixConfig
from attnkit.peft.prompt import PromptConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ATTNKIT_SIDE = "attnkit_adapter.json"  # attnkit's own record, beside peft's config (peft warns about unknown keys)
ENCODER_WEIGHTS = "prompt_encoder.safetensors"  # the weights of peft's PrefixEncoder / PromptEncoder (module docstring)
# peft's encoder (module-local name prefix) -> attnkit's (relative to model.prefix_table or model.prompt_encoder.encoder);
# the layers are the same modules in the same order: peft's PrefixEncoder is embedding + transform (Linear, Tanh, Linear),
# its PromptEncoder embedding + lstm_head (bi-LSTM) + mlp_head, as attnkit's PrefixTable and PromptEncoder build them
ENCODER_NAMES = {"prefix": (("embedding.weight", "embedding"), ("transform.", "mlp.")),
                 "ptuning": (("embedding.weight", "embedding"), ("lstm_head.", "lstm."), ("mlp_head.", "mlp."))}
CONFIGS = {"lora": LoRAConfig, "qlora": LoRAConfig, "prefix": PrefixConfig, "ptuning-v2": PrefixConfig, "prompt": PromptConfig,
           "ptuning": PromptConfig}


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """What the adapter of ``model`` trained, by attnkit name, in its saved form (computed prefix/prompt tables)."""
    method, config = model.peft_method  # type: ignore[attr-defined]
    out: dict[str, Tensor] = {}
    for name, m in lora_layers(model).items():
        for part in m.lora_A:
            out[f"{name}.lora_A.{part}"] = m.lora_A[part]
            out[f"{name}.lora_B.{part}"] = m.lora_B[part]
            if part in m.magnitude:
                out[f"{name}.magnitude.{part}"] = m.magnitude[part]
    if hasattr(model, "prefix_table"):
        out["prefix_table"] = model.prefix_table.full()
    if hasattr(model, "prompt_encoder"):
        out["prompt_embeddings"] = model.prompt_encoder.encoder()
    for k in keep_modules(model, config):
        for pn, p in model.get_submodule(k).named_parameters():
            out[f"{k}.{pn}"] = p
    return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}


def _encoder_config(model: nn.Module) -> dict[str, Any]:
    enc = getattr(model, "bert", model)
    return enc.config.to_dict()


def save_adapter(model: nn.Module, path: str | os.PathLike, *, base: str | os.PathLike, tokenizer: Any = None,
                 fill_more: Callable[[Path], None] | None = None) -> Path:
    """Write the adapter of ``model`` as a peft directory (see the module).

    Args:
        model: a model with an adapter applied (:func:`attnkit.peft.apply_peft`).
        path: the directory to write (replaced atomically).
        base: the model directory the adapter was applied to; recorded as its base.
        tokenizer: saved beside the adapter (``tokenizer.json``), as with a model.
        fill_more: called with the directory under construction (a checkpoint's trainer state).

    Returns:
        ``path``.
    """
    method, config = model.peft_method  # type: ignore[attr-defined]
    kind = hf_kind(base)
    state = adapter_state_dict(model)
    if kind == "gpt2":
        state = fuse_slices(model, state)
    if kind is not None:
        rename = peft_names(model, kind)
        state = {rename(k): v for k, v in state.items()}
    cfg = peft_config(model, kind, str(base))
    saved_config = config.replace(reparam=False) if isinstance(config, PrefixConfig) else \
        config.replace(encoder="none") if isinstance(config, PromptConfig) else config
    side = {"method": method, "config": saved_config.to_dict(), "names": "peft" if kind else "attnkit",
                      "model_type": getattr(model, "model_type", ""), "model_config": model.config.to_dict(),
                      "base_config": _encoder_config(model)}

    def fill(tmp: Path) -> None:
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        (tmp / ATTNKIT_SIDE).write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
        save_file(state, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        if tokenizer is not None:
            if isinstance(tokenizer, (str, os.PathLike)):
                shutil.copyfile(tokenizer, tmp / "tokenizer.json")
            else:
                tokenizer.save(str(tmp / "tokenizer.json"))
        if fill_more is not None:
            from attnkit.models.base import unique_state_dict

            save_file(unique_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})  # exact resume
            fill_more(tmp)

    atomic_directory(Path(path), fill)
    return Path(path)


def attach_saving(model: nn.Module, base: str | os.PathLike) -> nn.Module:
    """Make ``model.save_pretrained`` write an adapter directory naming ``base`` (the Trainer's saves then
    write adapters; a checkpoint also keeps the whole state, for an exact resume). ``base`` is recorded
    as an absolute path, so the adapter loads from any working directory."""
    base = str(Path(base).resolve())

    def save_pretrained(self: nn.Module, path: str | os.PathLike, *, tokenizer: Any = None, extra_files: Any = None,
                        fill_more: Callable[[Path], None] | None = None) -> Path:
        return save_adapter(self, path, base=base, tokenizer=tokenizer, fill_more=fill_more)

    model.save_pretrained = types.MethodType(save_pretrained, model)
    return model


def read_adapter_config(path: str | os.PathLike) -> dict[str, Any]:
    f = Path(path) / ADAPTER_CONFIG
    try:
        data = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{f} cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{f} is not a JSON object")
    side = Path(path) / ATTNKIT_SIDE
    if side.is_file():
        try:
            data["attnkit"] = json.loads(side.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{side} cannot be read ({e})") from None
    return data


def _check_base(data: dict[str, Any], model: nn.Module, source: str) -> None:
    want = (data.get("attnkit") or {}).get("base_config")
    if not want:
        return
    have = _encoder_config(model)
    for k in sorted(set(want) | set(have)):
        if want.get(k) != have.get(k):
            raise CheckpointError(f"{source}: the adapter was trained on a base with {k}={want.get(k)!r}; this base has "
                                  f"{k}={have.get(k)!r} (load it onto the model it names)")


def load_adapter_into(model: nn.Module, path: str | os.PathLike, *, base: str | os.PathLike | None = None) -> nn.Module:
    """Apply the adapter saved in ``path`` to ``model`` (a freshly loaded base) and load its weights.

    Args:
        model: the base model (for a task head, the head with the base's encoder).
        path: an adapter directory written by attnkit or peft.
        base: the base's directory (decides whether the file uses peft's names); default the one it names.

    Returns:
        ``model`` with the adapter, in eval mode.

    Raises:
        CheckpointError: another base, a missing, surplus or misshapen tensor (e.g. another rank).
    """
    from attnkit.peft.method import apply_method

    path = Path(path)
    data = read_adapter_config(path)
    source = str(path / ADAPTER_CONFIG)
    base = base if base is not None else data.get("base_model_name_or_path")
    kind = hf_kind(base)
    _check_base(data, model, source)
    ak = data.get("attnkit")
    if ak:
        method = ak["method"]
        if method not in CONFIGS:
            raise CheckpointError(f"{source}: method {method!r} is unknown")
        try:
            config = CONFIGS[method].from_dict(ak["config"])
        except ConfigError as e:
            raise CheckpointError(f"{source}: {e}") from None
        if method == "prefix":
            method = "ptuning-v2"  # the saved table, without the MLP
        elif method == "ptuning":
            method = "prompt"
    else:
        method, config = config_from_peft(data, model, kind, source)
    try:
        apply_method(model, method, config)
    except ConfigError as e:
        raise CheckpointError(f"{source}: {e}") from None
    load_adapter_state(model, _stored_state(model, path, config, kind, ak))
    return model.eval()


def _stored_state(model: nn.Module, path: Path, config: Any, kind: str | None, ak: dict[str, Any] | None) -> dict[str, Tensor]:
    """The tensors of adapter directory ``path`` by attnkit name, each checked against the adapter of ``model``.

    Raises:
        CheckpointError: a surplus, missing or misshapen tensor.
    """
    expected = adapter_state_dict(model)
    named_as_peft = (ak or {}).get("names", "peft" if kind else "attnkit") == "peft" and kind is not None
    fused = named_as_peft and kind == "gpt2" and bool(sliced(model))
    if fused:
        expected = fuse_slices(model, expected)
    rename = peft_names(model, kind) if named_as_peft else (lambda k: k)
    file_key = {rename(k): k for k in expected}
    try:
        stored = load_file(str(path / ADAPTER_WEIGHTS))
    except (OSError, Exception) as e:  # noqa: BLE001 - a corrupt file is the user's to replace
        raise CheckpointError(f"{path / ADAPTER_WEIGHTS} cannot be read ({str(e).splitlines()[0][:200]})") from None
    state: dict[str, Tensor] = {}
    for fk, t in stored.items():
        if fk not in file_key:
            raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: {fk!r} belongs to no adapted layer of the base")
        k = file_key[fk]
        if tuple(t.shape) != tuple(expected[k].shape):
            r = getattr(config, "r", None)
            hint = f"; adapter_config.json says r={r}" if "lora_" in fk and r is not None else ""
            raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: {fk!r} has shape {tuple(t.shape)}, the adapter expects "
                                  f"{tuple(expected[k].shape)}{hint}")
        state[k] = t
    missing = sorted(set(expected) - set(state))
    if missing:
        raise CheckpointError(f"{path / ADAPTER_WEIGHTS}: no tensor for {rename(missing[0])!r}; {len(missing)} missing")
    return split_fused(model, state) if fused else state


def init_adapter_from(model: nn.Module, path: str | os.PathLike, *, base: str | os.PathLike | None = None) -> nn.Module:
    """Start the adapter already applied to ``model`` (and the head trained beside it) from the weights of adapter
    directory ``path``, one that peft or attnkit wrote before training, in place of its own initialisation.

    The directory must hold the same adapter: its method, LoRA's ``r``, ``alpha``, DoRA and rsLoRA, the same adapted
    layers and virtual tokens, and the head. Prefix tuning with its MLP and P-tuning with its encoder train weights the
    adapter file does not hold (it holds the table they compute): they start from :data:`ENCODER_WEIGHTS` beside it
    (peft's encoder state dict, :func:`save_peft_encoder`), whose layers must have the shapes of the peft section's
    (``peft.hidden``, ``peft.encoder``), and whose table must be the adapter file's (so the two files hold one state).

    Args:
        model: a model with an adapter applied (:func:`attnkit.peft.apply_peft`).
        path: the adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``, and for ``prefix`` and
            ``ptuning`` ``prompt_encoder.safetensors``).
        base: the base's directory (decides whether the file uses peft's names); default the one it names.

    Returns:
        ``model``, its training mode unchanged.

    Raises:
        ConfigError: ``path`` is no adapter directory or holds another adapter (one line, naming ``peft.init_from``).
    """
    method, config = model.peft_method  # type: ignore[attr-defined]
    where = f"peft.init_from={str(path)!r}"
    if not is_adapter_dir(path):
        raise ConfigError(f"{where}: no {ADAPTER_CONFIG} there; give an adapter directory (peft's save_pretrained writes one)")
    encoded = isinstance(config, PrefixConfig) and config.reparam or isinstance(config, PromptConfig) and config.encoder != "none"
    if encoded and not (Path(path) / ENCODER_WEIGHTS).is_file():
        trains, instead = ("MLP", "ptuning-v2") if method == "prefix" else ("encoder", "prompt")
        raise ConfigError(f"{where}: an adapter directory holds the table that peft.method={method!r} computes, not the "
                          f"{trains} it trains; put the {trains}'s weights beside it as {ENCODER_WEIGHTS} (save_peft_encoder) "
                          f"or start {instead} from it")
    try:
        data = read_adapter_config(path)
        _check_base(data, model, where)
    except CheckpointError as e:
        raise ConfigError(str(e)) from None
    ptype = data.get("peft_type")
    if ptype != PEFT_TYPES[method]:
        raise ConfigError(f"{where} holds a {ptype} adapter; peft.method={method!r} is {PEFT_TYPES[method]}: "
                          "give a directory of that method")
    if isinstance(config, LoRAConfig):
        theirs = {"r": data.get("r"), "alpha": data.get("lora_alpha"), "dora": bool(data.get("use_dora")),
                  "rslora": bool(data.get("use_rslora"))}
        for k, v in theirs.items():
            if v != getattr(config, k):
                raise ConfigError(f"{where} has {k}={v!r}, the peft section {k}={getattr(config, k)!r}: set peft.{k} to match")
    if encoded:
        _check_encoder_config(data, method, config, where)
    base = base if base is not None else data.get("base_model_name_or_path")
    try:
        state = _stored_state(model, Path(path), config, hf_kind(base), data.get("attnkit"))
    except CheckpointError as e:  # other layers (peft.targets), another number of virtual tokens, or no head
        raise ConfigError(f"{where} holds another adapter than the peft section's ({e})") from None
    if encoded:
        table = state.pop("prefix_table" if method == "prefix" else "prompt_embeddings")
        _init_encoder(model, method, Path(path) / ENCODER_WEIGHTS, table, where)
    load_adapter_state(model, state)
    return model


def _check_encoder_config(data: dict[str, Any], method: str, config: Any, where: str) -> None:
    """peft's encoder settings in ``adapter_config.json`` against the peft section's (where peft recorded them)."""
    if method == "prefix" and data.get("prefix_projection") is False:
        raise ConfigError(f"{where} holds prefix tuning without its MLP (prefix_projection=false): start ptuning-v2 from it")
    hidden = data.get("encoder_hidden_size")
    if hidden is not None and hidden != config.hidden:
        raise ConfigError(f"{where} has encoder_hidden_size={hidden!r}, the peft section hidden={config.hidden!r}: "
                          "set peft.hidden to match")
    if method == "ptuning":
        kind = str(data.get("encoder_reparameterization_type", config.encoder)).lower()
        if kind != config.encoder:
            raise ConfigError(f"{where} has encoder_reparameterization_type={kind.upper()!r}, the peft section "
                              f"encoder={config.encoder!r}: set peft.encoder to match")
        layers = data.get("encoder_num_layers", 2)
        if kind == "lstm" and layers != 2:
            raise ConfigError(f"{where} has encoder_num_layers={layers!r}; attnkit's P-tuning LSTM has 2 layers (as peft's default)")


@torch.no_grad()
def _init_encoder(model: nn.Module, method: str, file: Path, table: Tensor, where: str) -> None:
    """Copy peft's encoder weights in ``file`` into ``model``'s MLP or prompt encoder (every tensor used, every shape
    equal), then check that they compute ``table``, the adapter file's table.

    Raises:
        ConfigError: the file cannot be read, a surplus, missing or misshapen tensor, or another table.
    """
    encoder = model.prefix_table if method == "prefix" else model.prompt_encoder.encoder
    try:
        stored = load_file(str(file))
    except Exception as e:  # noqa: BLE001 - a corrupt file is the user's to replace
        raise ConfigError(f"{where}: {file.name} cannot be read ({str(e).splitlines()[0][:200]})") from None
    ours = dict(encoder.named_parameters())
    names = ENCODER_NAMES[method]
    done: set[str] = set()
    for key, t in stored.items():
        name = next((ak + key[len(pk):] for pk, ak in names if key == pk or pk.endswith(".") and key.startswith(pk)), None)
        if name not in ours:
            raise ConfigError(f"{where}: {file.name} holds {key!r}, which peft.method={method!r}'s encoder does not have")
        if tuple(t.shape) != tuple(ours[name].shape):
            raise ConfigError(f"{where}: {file.name} has {key!r} of shape {tuple(t.shape)}, the peft section's encoder "
                              f"{tuple(ours[name].shape)} (peft.hidden={model.peft_method[1].hidden})")
        ours[name].copy_(t)
        done.add(name)
    missing = sorted(set(ours) - done)
    if missing:
        raise ConfigError(f"{where}: {file.name} has no tensor for attnkit's {missing[0]!r}; {len(missing)} missing")
    computed = (encoder.full() if method == "prefix" else encoder()).float().cpu()  # (P, width)
    scale = max(1.0, float(table.abs().max()))
    diff = float((computed - table.float()).abs().max())
    if diff > 1e-2 * scale:  # rounding only (TF32 cuDNN LSTMs where peft ran on a GPU); another encoder differs at the table's scale
        raise ConfigError(f"{where}: {file.name} computes another table than {ADAPTER_WEIGHTS} holds (max difference {diff:.3g}): "
                          "the two files come from different states or encoders")


def save_peft_encoder(peft_model: nn.Module, path: str | os.PathLike, adapter_name: str = "default") -> Path:
    """Write the weights of a peft ``PeftModel``'s prefix or prompt encoder (``peft_model.prompt_encoder[adapter_name]``)
    as ``path/prompt_encoder.safetensors``, beside the directory its ``save_pretrained`` wrote, for
    :func:`init_adapter_from` to start attnkit's MLP or LSTM prompt encoder from.

    Returns:
        The file written.
    """
    encoders = getattr(peft_model, "prompt_encoder", None)
    if encoders is None or adapter_name not in encoders:
        raise ConfigError(f"{type(peft_model).__name__} has no prompt encoder {adapter_name!r} (a peft prompt-learning model has one)")
    state = {k: v.detach().float().cpu().contiguous() for k, v in encoders[adapter_name].state_dict().items()}
    out = Path(path) / ENCODER_WEIGHTS
    atomic_write(out, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))  # a kill leaves no half-written file
    return out


@torch.no_grad()
def load_adapter_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy an :func:`adapter_state_dict` (attnkit names) into the adapter of ``model``."""
    for k, t in state.items():
        if k == "prefix_table":
            model.prefix_table.table.copy_(t)
        elif k == "prompt_embeddings":
            model.prompt_encoder.encoder.embedding.copy_(t)
        else:
            module, _, param = k.rpartition(".")
            owner = model.get_submodule(module)
            getattr(owner, param).copy_(t) if not isinstance(owner, nn.ParameterDict) else owner[param].copy_(t)


__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "ENCODER_WEIGHTS", "adapter_state_dict", "attach_saving", "init_adapter_from",
           "is_adapter_dir", "load_adapter_into", "load_adapter_state", "read_adapter_config", "save_adapter", "save_peft_encoder"]


def load_adapted(path: str | os.PathLike, *, map_location: str | torch.device = "cpu", base: str | os.PathLike | None = None) -> nn.Module:
    """The model an adapter directory describes: its base loaded (``base_model_name_or_path``, or ``base``),
    the task head it was trained with rebuilt, and the adapter applied.

    Raises:
        CheckpointError: the base is missing or another model, or the files disagree with it.
    """
    from attnkit.loading import load
    from attnkit.models.base import _MODELS

    path = Path(path)
    data = read_adapter_config(path)
    base = base if base is not None else data.get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise CheckpointError(f"{path / ADAPTER_CONFIG}: its base model {base!r} is not a directory here; "
                              "pass the base's directory (--base DIR)")
    model = load(base)
    _check_base(data, model, str(path / ADAPTER_CONFIG))  # before a head is built on it
    ak = data.get("attnkit") or {}
    model_type = ak.get("model_type")
    if model_type and model_type != getattr(model, "model_type", model_type) and model_type in _MODELS:
        cls = _MODELS[model_type]
        try:
            head = cls(cls.config_class.from_dict(ak["model_config"]))
        except ConfigError as e:
            raise CheckpointError(f"{path / ADAPTER_CONFIG}: {e}") from None
        head.bert.load_state_dict(getattr(model, "bert", model).state_dict())
        model = head
    load_adapter_into(model, path, base=base)
    attach_saving(model, base)
    return model.to(map_location)


__all__ += ["load_adapted"]


def merge_adapter(path: str | os.PathLike, out: str | os.PathLike, *, base: str | os.PathLike | None = None) -> Path:
    """Write the model of LoRA adapter ``path`` with the update merged into its weights, as a plain attnkit model.

    An NF4 (QLoRA) base is dequantized and merged in fp32, which is the function the adapter was
    trained with. Prefix and prompt adapters have nothing to merge and are refused.

    Raises:
        ConfigError: ``out`` exists, or the adapter is not LoRA.
    """
    from attnkit.peft.lora import merge_and_unload

    out = Path(out)
    if out.exists():
        raise ConfigError(f"--out {out} exists; give a new directory")
    model = load_adapted(path, base=base)
    method = model.peft_method[0]  # type: ignore[attr-defined]
    if method not in ("lora", "qlora"):
        raise ConfigError(f"{path} holds a {method} adapter; only LoRA updates merge into weights (prefixes and prompts stay inputs)")
    merge_and_unload(model)
    del model.save_pretrained, model.peft_method  # the plain model's own saving again
    tok = Path(path) / "tokenizer.json"
    model.save_pretrained(out, tokenizer=tok if tok.is_file() else None)
    return out


__all__ += ["merge_adapter"]
