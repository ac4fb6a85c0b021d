"""Hugging Face Llama, Mistral and Qwen2 checkpoints <-> :class:`attnkit.models.gpt.GPT`.

The three families share one layer: pre-RMSNorm, rotary positions, grouped-query attention with
separate ``q_proj``/``k_proj``/``v_proj``, a SwiGLU MLP (``gate_proj``, ``up_proj``,
``down_proj``). They differ in what attnkit's :class:`~attnkit.models.gpt.GPTConfig` holds as
options: Mistral's ``sliding_window`` is ``window``; Qwen2's q/k/v biases (and no output bias)
are ``qkv_bias=True, bias=False``; Llama's ``attention_bias``/``mlp_bias`` are ``bias``.

Weights: q/k/v are fused into ``qkv_proj`` (rows q, then k, then v; k and v have
``n_kv_heads * head_dim`` rows each) and gate/up into the gated FFN's ``w1`` (gate rows first).
Hugging Face rotates with the rotate-half layout, attnkit's rotary position (``layout="half"``) too, so
q and k rows are copied as they are (a checkpoint in Meta's interleaved layout would need
:func:`attnkit.positions.interleaved_to_half` on them first).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from attnkit.errors import CheckpointError, ConfigError
from attnkit.hub.keymap import Fuse, KeyMap, Rule, peek_config, read_hf_config, read_hf_weights
from attnkit.io import atomic_directory
from attnkit.models.base import CONFIG_NAME, WEIGHTS_NAME, check_size, unique_state_dict
from attnkit.models.gpt import GPT, GPTConfig

FAMILIES = ("llama", "mistral", "qwen2")
_ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
# hidden_act values and their attnkit names.
_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh"}


def llama_keys(c: GPTConfig) -> KeyMap:
    """The key map of a Llama-family model of config ``c`` (the q/k/v sizes depend on its heads)."""
    hf, at = "model.layers.{i}", "decoder.layers.{i}"
    d, d_kv = c.d_model, c.kv_heads * c.head_dim
    qkv = tuple(f"{hf}.self_attn.{p}_proj" for p in "qkv")
    mlp = (f"{hf}.mlp.gate_proj", f"{hf}.mlp.up_proj")
    return KeyMap(
        rules=(
            Rule("model.embed_tokens.weight", "tok_embed.weight"),
            Rule(f"{hf}.input_layernorm.weight", f"{at}.res_attn.norm.weight"),
            Rule(f"{hf}.self_attn.o_proj.weight", f"{at}.self_attn.out_proj.weight"),
            Rule(f"{hf}.self_attn.o_proj.bias", f"{at}.self_attn.out_proj.bias"),
            Rule(f"{hf}.post_attention_layernorm.weight", f"{at}.res_ffn.norm.weight"),
            Rule(f"{hf}.mlp.down_proj.weight", f"{at}.ffn.w2.weight"),
            Rule(f"{hf}.mlp.down_proj.bias", f"{at}.ffn.w2.bias"),
            Rule("model.norm.weight", "decoder.norm.weight"),
            Rule("lm_head.weight", "lm_head.weight"),
        ),
        # Rotary frequencies that older conversions saved as weights; attnkit computes them.
        ignore=(f"{hf}.self_attn.rotary_emb.inv_freq",),
        fused=(
            Fuse(tuple(f"{p}.weight" for p in qkv), f"{at}.self_attn.qkv_proj.weight", (d, d_kv, d_kv)),
            Fuse(tuple(f"{p}.bias" for p in qkv), f"{at}.self_attn.qkv_proj.bias", (d, d_kv, d_kv)),
            Fuse(tuple(f"{p}.weight" for p in mlp), f"{at}.ffn.w1.weight"),
            Fuse(tuple(f"{p}.bias" for p in mlp), f"{at}.ffn.w1.bias"),
        ),
    )


def is_hf_llama(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory with a Hugging Face Llama, Mistral or Qwen2 ``config.json``."""
    data = peek_config(path)
    return data is not None and data.get("model_type") in FAMILIES


def _rope(data: dict[str, Any]) -> dict[str, Any]:
    """The rotary settings: ``rope_parameters`` (transformers 5) or ``rope_theta``/``rope_scaling`` (4)."""
    params = data.get("rope_parameters")
    if isinstance(params, dict):
        return params
    return {"rope_theta": data.get("rope_theta", 10000.0), **(data.get("rope_scaling") or {})}


def config_from_hf(data: dict[str, Any], source: str = CONFIG_NAME) -> GPTConfig:
    """A :class:`GPTConfig` from a ``LlamaConfig``/``MistralConfig``/``Qwen2Config`` dict.

    Args:
        data: the ``config.json`` contents.
        source: the file's name, for errors.

    Returns:
        The config.

    Raises:
        ConfigError: a variant attnkit does not express, naming the field.
    """
    family = data.get("model_type")

    def need(field: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {field}={data.get(field)!r} is not supported; {allowed}")

    d, heads = data.get("hidden_size", 4096), data.get("num_attention_heads", 32)
    act = data.get("hidden_act", "silu")
    need("hidden_act", act in _ACTIVATIONS, f"use one of {', '.join(_ACTIVATIONS)}")
    need("head_dim", data.get("head_dim") in (None, d // heads), f"attnkit's head_dim is hidden_size / num_attention_heads = {d // heads}")
    rope = _rope(data)
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ConfigError(f"{source}: rope_type={kind!r} is not supported; only the default rotary frequencies load")
    need("partial_rotary_factor", rope.get("partial_rotary_factor", data.get("partial_rotary_factor", 1.0)) == 1.0, "must be 1.0")
    need("use_sliding_window", not data.get("use_sliding_window", False), "Qwen2's per-layer sliding window is not supported")
    if family == "qwen2":
        bias, qkv_bias = False, True  # Qwen2: biases on q/k/v only
    else:
        bias = bool(data.get("attention_bias", False))
        need("mlp_bias", bool(data.get("mlp_bias", False)) == bias, f"attnkit's bias covers both; must equal attention_bias={bias}")
        qkv_bias = None
    window = data.get("sliding_window") if family == "mistral" else None
    n_kv = data.get("num_key_value_heads") or heads
    try:
        return GPTConfig(
            vocab_size=data.get("vocab_size", 32000),
            context=data.get("max_position_embeddings", 2048),
            d_model=d,
            n_heads=heads,
            n_kv_heads=None if n_kv == heads else n_kv,
            n_layers=data.get("num_hidden_layers", 32),
            d_ff=data.get("intermediate_size", 11008),
            dropout=0.0,
            activation=_ACTIVATIONS[act],  # type: ignore[arg-type]
            norm="rms",
            norm_eps=data.get("rms_norm_eps", 1e-6),
            ffn="gated",
            bias=bias,
            qkv_bias=qkv_bias,
            window=window,
            tie_embeddings=bool(data.get("tie_word_embeddings", False)),
            attention={"kind": "scaled_dot", "dropout": data.get("attention_dropout", 0.0),
                       "position": {"kind": "rotary", "base": float(rope.get("rope_theta", 10000.0)), "layout": "half"}},
            init_std=data.get("initializer_range", 0.02),
        )
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def family_of(c: GPTConfig) -> str:
    """The Hugging Face family that expresses ``c``: ``mistral`` with a window, ``qwen2`` with
    q/k/v biases only, else ``llama``; raises ConfigError for a GPT none of them expresses."""
    pos = getattr(c.attention, "position", None)
    kind = getattr(pos, "kind", "none")
    if kind != "rotary" or c.norm != "rms" or c.ffn != "gated":
        raise ConfigError(
            f"attention.position.kind={kind!r}, norm={c.norm!r}, ffn={c.ffn!r}: a Llama-family checkpoint needs rotary, rms and gated"
        )
    if pos.layout != "half" or pos.rotary_dim not in (None, c.head_dim) or pos.scaling != "none":
        raise ConfigError("a Llama-family checkpoint rotates the whole head in the half layout without scaling; "
                          f"attention.position has layout={pos.layout!r}, rotary_dim={pos.rotary_dim}, scaling={pos.scaling!r}")
    if c.activation not in _ACTIVATIONS.values():
        raise ConfigError(f"activation={c.activation!r} has no Llama-family equivalent; use silu, gelu or gelu_tanh")
    if c.attention.kind != "scaled_dot" or c.attention.params:  # a kernel Hugging Face has no name for
        raise ConfigError(f"attention.kind={c.attention.kind!r} with params {c.attention.params} has no Llama-family equivalent; use scaled_dot")
    qkv_bias = c.bias if c.qkv_bias is None else c.qkv_bias
    if c.window is not None:
        if qkv_bias or c.bias:
            raise ConfigError("a sliding window with biases has no Hugging Face equivalent (Mistral has no biases)")
        return "mistral"
    if qkv_bias and not c.bias:
        return "qwen2"
    if qkv_bias != c.bias:
        raise ConfigError(f"qkv_bias={c.qkv_bias} with bias={c.bias} has no Llama-family equivalent")
    return "llama"


def config_to_hf(c: GPTConfig) -> dict[str, Any]:
    """The Hugging Face config dict of a Llama-family :class:`GPTConfig` (family from :func:`family_of`)."""
    family = family_of(c)
    hf_act = {v: k for k, v in _ACTIVATIONS.items()}
    out: dict[str, Any] = {
        "model_type": family,
        "architectures": [_ARCHITECTURES[family]],
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.context,
        "hidden_size": c.d_model,
        "intermediate_size": c.ffn_dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": hf_act[c.activation],
        "rms_norm_eps": c.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.attention.position.base},  # type: ignore[attr-defined]
        "rope_theta": c.attention.position.base,  # type: ignore[attr-defined]  # the transformers 4 spelling
        "attention_dropout": c.attention.dropout,
        "initializer_range": c.init_std,
        "tie_word_embeddings": c.tie_embeddings,
    }
    if family == "llama":
        out.update(attention_bias=c.bias, mlp_bias=c.bias)
    if family == "mistral":
        out["sliding_window"] = c.window
    if family == "qwen2":
        out.update(use_sliding_window=False, sliding_window=None)
    return out


def load_hf_llama(path: str | os.PathLike) -> GPT:
    """Build a :class:`GPT` from a Hugging Face Llama, Mistral or Qwen2 directory, checking every key and shape.

    Args:
        path: the directory (``config.json`` + ``model.safetensors``).

    Returns:
        The model (float32 parameters).

    Raises:
        CheckpointError: an unsupported variant, or a missing, surplus or misshapen key.
    """
    data, cfg_path = read_hf_config(path)
    try:
        config = config_from_hf(data, str(cfg_path))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    state, weights_path = read_hf_weights(path)
    if config.tie_embeddings:
        head = state.pop("lm_head.weight", None)
        if head is not None and not torch.equal(head, state.get("model.embed_tokens.weight", head)):
            raise CheckpointError(f"{weights_path}: lm_head.weight differs from embed_tokens.weight although tie_word_embeddings is true")
    try:  # shapes from the meta device first: a config that disagrees with the weights allocates nothing
        expected = check_size(GPT, config, prefix=f"{cfg_path}: ").state_dict()
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    optional = {"lm_head.weight"} if config.tie_embeddings else set()
    converted = llama_keys(config).to_attnkit(state, expected, str(weights_path), optional=optional)
    model = GPT(config)
    model.load_state_dict(converted, strict=False)
    return model


def save_hf_llama(model: GPT, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> Path:
    """Write ``model`` as a Hugging Face directory that ``LlamaForCausalLM`` / ``MistralForCausalLM`` /
    ``Qwen2ForCausalLM.from_pretrained`` loads (the family from :func:`family_of`).

    Args:
        model: a GPT with the Llama family's layer (rotary, RMSNorm, gated FFN).
        path: the directory to write (atomically).
        tokenizer: a ``tokenizer.json`` to copy in.

    Returns:
        ``path``.
    """
    hf_config = config_to_hf(model.config)
    state = unique_state_dict(model)  # a tied lm_head is stored once, as the embeddings
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    hf_state = {k: v.contiguous() for k, v in llama_keys(model.config).from_attnkit(state).items()}

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        save_file(hf_state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:  # inside the directory before it is renamed into place
            shutil.copyfile(tokenizer, tmp / "tokenizer.json")

    atomic_directory(Path(path), fill)
    return Path(path)


__all__ = ["FAMILIES", "config_from_hf", "config_to_hf", "family_of", "is_hf_llama", "llama_keys", "load_hf_llama", "save_hf_llama"]
