"""Hugging Face GPT-2 checkpoints <-> :class:`attnkit.models.gpt.GPT`.

A Hugging Face GPT-2 directory holds ``config.json`` (``"model_type": "gpt2"``) and
``model.safetensors``. Its linear layers are ``Conv1D`` modules whose weights are stored
``(in, out)``, so they are transposed; the fused ``c_attn`` matrix already has attnkit's
q|k|v layout. Keys may carry a ``transformer.`` prefix (``GPT2LMHeadModel``) or not
(``GPT2Model``, the original OpenAI conversion). ``lm_head.weight``, when stored, must equal
the token embeddings (GPT-2 ties them).
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
from attnkit.hub.keymap import KeyMap, Rule, peek_config, read_hf_config, read_hf_weights
from attnkit.io import atomic_directory
from attnkit.models.base import CONFIG_NAME, WEIGHTS_NAME, check_size, unique_state_dict
from attnkit.models.gpt import GPT, GPTConfig

_L = "decoder.layers.{i}"
GPT2_KEYS = KeyMap(
    rules=(
        Rule("wte.weight", "tok_embed.weight"),
        Rule("wpe.weight", "positions.embedding.weight"),
        Rule("h.{i}.ln_1.weight", f"{_L}.res_attn.norm.weight"),
        Rule("h.{i}.ln_1.bias", f"{_L}.res_attn.norm.bias"),
        Rule("h.{i}.attn.c_attn.weight", f"{_L}.self_attn.qkv_proj.weight", "transpose"),
        Rule("h.{i}.attn.c_attn.bias", f"{_L}.self_attn.qkv_proj.bias"),
        Rule("h.{i}.attn.c_proj.weight", f"{_L}.self_attn.out_proj.weight", "transpose"),
        Rule("h.{i}.attn.c_proj.bias", f"{_L}.self_attn.out_proj.bias"),
        Rule("h.{i}.ln_2.weight", f"{_L}.res_ffn.norm.weight"),
        Rule("h.{i}.ln_2.bias", f"{_L}.res_ffn.norm.bias"),
        Rule("h.{i}.mlp.c_fc.weight", f"{_L}.ffn.w1.weight", "transpose"),
        Rule("h.{i}.mlp.c_fc.bias", f"{_L}.ffn.w1.bias"),
        Rule("h.{i}.mlp.c_proj.weight", f"{_L}.ffn.w2.weight", "transpose"),
        Rule("h.{i}.mlp.c_proj.bias", f"{_L}.ffn.w2.bias"),
        Rule("ln_f.weight", "decoder.norm.weight"),
        Rule("ln_f.bias", "decoder.norm.bias"),
    ),
    # Causal-mask buffers that old conversions saved as weights.
    ignore=("h.{i}.attn.bias", "h.{i}.attn.masked_bias"),
)

# activation_function values of GPT2Config and their attnkit names.
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}


def is_hf_gpt2(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory with a Hugging Face GPT-2 ``config.json``."""
    data = peek_config(path)
    return data is not None and data.get("model_type") == "gpt2"


def config_from_hf(data: dict[str, Any], source: str = CONFIG_NAME) -> GPTConfig:
    """A :class:`GPTConfig` from a ``GPT2Config`` dict; unsupported variants raise ConfigError naming the field."""

    def need(field: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {field}={data.get(field)!r} is not supported; {allowed}")

    act = data.get("activation_function", "gelu_new")
    need("activation_function", act in _ACTIVATIONS, f"use one of {', '.join(_ACTIVATIONS)}")
    need("scale_attn_weights", data.get("scale_attn_weights", True) is True, "attnkit scales by 1/sqrt(d_k)")
    need("scale_attn_by_inverse_layer_idx", not data.get("scale_attn_by_inverse_layer_idx", False), "must be false")
    need("add_cross_attention", not data.get("add_cross_attention", False), "must be false")
    need("tie_word_embeddings", data.get("tie_word_embeddings", True) is True, "GPT ties the output to the embeddings")
    drop = data.get("resid_pdrop", 0.1)
    need("embd_pdrop", data.get("embd_pdrop", 0.1) == drop, f"attnkit uses one dropout; must equal resid_pdrop={drop}")
    try:
        return GPTConfig(
            vocab_size=data.get("vocab_size", 50257),
            context=data.get("n_positions", 1024),
            d_model=data.get("n_embd", 768),
            n_heads=data.get("n_head", 12),
            n_layers=data.get("n_layer", 12),
            d_ff=data.get("n_inner"),
            dropout=drop,
            activation=_ACTIVATIONS[act],  # type: ignore[arg-type]
            norm_eps=data.get("layer_norm_epsilon", 1e-5),
            attention={"kind": "scaled_dot", "dropout": data.get("attn_pdrop", 0.1)},
            init_std=data.get("initializer_range", 0.02),
        )
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def config_to_hf(c: GPTConfig) -> dict[str, Any]:
    """The ``GPT2Config`` dict of a :class:`GPTConfig`; raises ConfigError for what GPT-2 cannot express."""
    hf_act = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}
    if c.activation not in hf_act:
        raise ConfigError(f"activation={c.activation!r} has no GPT-2 equivalent; use gelu_tanh, gelu or relu")
    if c.attention.kind != "scaled_dot" or c.attention.params:
        raise ConfigError(f"attention.kind={c.attention.kind!r} with params {c.attention.params} has no GPT-2 equivalent; use scaled_dot")
    if not c.bias:
        raise ConfigError("bias=false has no GPT-2 equivalent; GPT-2 layers have biases")
    modern = {"norm": (c.norm, "layer"), "ffn": (c.ffn, "mlp"), "n_kv_heads": (c.kv_heads, c.n_heads), "window": (c.window, None),
              "tie_embeddings": (c.tie_embeddings, True), "qkv_bias": (c.qkv_bias, None)}
    for name, (value, gpt2) in modern.items():
        if value != gpt2 and not (name == "qkv_bias" and value is True):
            raise ConfigError(f"{name}={value!r} has no GPT-2 equivalent (GPT-2 has {gpt2!r})")
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": c.vocab_size,
        "n_positions": c.context,
        "n_embd": c.d_model,
        "n_layer": c.n_layers,
        "n_head": c.n_heads,
        "n_inner": c.d_ff,
        "activation_function": hf_act[c.activation],
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.attention.dropout,
        "layer_norm_epsilon": c.norm_eps,
        "initializer_range": c.init_std,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        # GPT-2's <|endoftext|> is the last of its 50257 tokens; other vocabularies have no known one.
        "bos_token_id": 50256 if c.vocab_size == 50257 else None,
        "eos_token_id": 50256 if c.vocab_size == 50257 else None,
    }


def load_hf_gpt2(path: str | os.PathLike) -> GPT:
    """Build a :class:`GPT` from a Hugging Face GPT-2 directory, checking every key and shape."""
    data, cfg_path = read_hf_config(path)
    try:
        config = config_from_hf(data, str(cfg_path))
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    state, weights_path = read_hf_weights(path)
    head = state.pop("lm_head.weight", None)
    prefix = "transformer." if any(k.startswith("transformer.") for k in state) else ""
    try:  # shapes from the meta device first: a config that disagrees with the weights allocates nothing
        expected = check_size(GPT, config, prefix=f"{cfg_path}: ").state_dict()
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    converted = GPT2_KEYS.to_attnkit(state, expected, str(weights_path), optional={"lm_head.weight"}, prefix=prefix)
    model = GPT(config)
    if head is not None and not torch.equal(head, converted["tok_embed.weight"]):
        raise CheckpointError(f"{weights_path}: lm_head.weight differs from wte.weight; untied GPT-2 heads are not supported")
    model.load_state_dict(converted, strict=False)
    return model


def save_hf_gpt2(model: GPT, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> Path:
    """Write ``model`` as a Hugging Face GPT-2 directory that ``GPT2LMHeadModel.from_pretrained`` loads."""
    hf_config = config_to_hf(model.config)
    state = unique_state_dict(model)  # the tied lm_head is stored once, as the embeddings
    state.pop("lm_head.weight", None)
    hf_state = {"transformer." + k: v.contiguous() for k, v in GPT2_KEYS.from_attnkit(state).items()}

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        save_file(hf_state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:  # inside the directory before it is renamed into place
            shutil.copyfile(tokenizer, tmp / "tokenizer.json")

    atomic_directory(Path(path), fill)
    return Path(path)
