"""Hugging Face Marian checkpoints (``MarianMTModel``) <-> :class:`attnkit.models.transformer.Transformer`.

Marian (Junczys-Dowmunt et al. 2018, "Marian: Fast Neural Machine Translation in C++"; the OPUS-MT models)
trains the translation Transformer of Vaswani et al. 2017 as the paper describes it, and ``transformers``
builds it from BART's layers. Each part is an option of :class:`~attnkit.models.transformer.TransformerConfig`,
most of them its defaults:

* post-norm layers, x = LayerNorm(x + Sublayer(x)) (section 3.1) with no norm after either stack and none over
  the embeddings: ``norm_position="post"``, ``norm="layer"`` (eps 1e-5, which Hugging Face does not configure),
  ``embedding_norm=False``; ``MarianConfig`` has no pre-norm option;
* attention with biases and the 1/sqrt(d_k) scale (eq. 1), the FFN ``act(x W_1 + b_1) W_2 + b_2`` (eq. 2; ReLU in
  the paper, swish in OPUS-MT): ``bias=True``, ``activation`` (``activation_function``);
* the fixed sinusoids of section 3.5 added to both stacks' embeddings: ``positional="sinusoidal"``
  (``max_position_embeddings`` rows: ``max_len``);
* the embeddings multiplied by sqrt(d_model) (section 3.4) when ``scale_embedding``: ``scale_embeddings``;
* one token table for the encoder, the decoder and (with ``tie_word_embeddings``) the output layer (section 3.4),
  or, without ``share_encoder_decoder_embeddings``, a table per stack (``decoder_vocab_size`` rows in the
  decoder's): ``share_embeddings``, ``tie_output``; a bias on the logits (the ``final_logits_bias`` buffer):
  ``output_bias=True``;
* the decoder starts from ``decoder_start_token_id`` (the pad id in OPUS-MT): ``bos_id``.

The position table's layout differs. Section 3.5 (and attnkit) interleave the features, sin(pos / 10000^(2i/d))
at 2i and the cosine of the same angle at 2i+1; ``MarianSinusoidalPositionalEmbedding`` puts the sines in the
first half and the cosines in the second. transformers does not save that table, rebuilds it from the formula
when a checkpoint lacks it, and reads it when a checkpoint has it, so a table in attnkit's layout would last
only until the next ``save_pretrained``. Export therefore renumbers the features instead: every axis of
length d_model that indexes the residual stream (token tables' columns, the input columns of each projection
that reads the stream, the output rows of each that writes to it, LayerNorm gains and shifts) is permuted by
:func:`marian_order`. Residual additions and LayerNorm statistics do not depend on the order of the features
and every linear map sees its inputs and outputs renumbered alike, so the permuted model computes the same
logits; its hidden states are the original ones permuted. Import applies the inverse permutation, and reads
a stored table only to check that it is Marian's own (another table is refused: transformers would use it).

Not expressed (refused by field): different head counts or FFN widths in the two stacks, the pre-norm or
embedding-norm variants that older configs describe (``normalize_before``, ``add_final_layer_norm``,
``normalize_embedding``), learned positions (``static_position_embeddings=false``), a list of EOS ids;
attnkit configs that are not Marian-shaped. Layer dropout acts only in training and is not carried over;
``forced_eos_token_id`` and the other generation settings are left to the caller (attnkit's decoding forces
nothing). attnkit's sinusoids extend past ``max_len``; Marian's table ends there. A kernel ``backend``
(``attention.params``) chooses how attention runs, not what it computes, and is not written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit.errors import CheckpointError, ConfigError
from attnkit.hub.bart import ACTIVATIONS, HF_NORM_EPS, TO_HF_ACTIVATION, bart_keys, strip_prefix, tied
from attnkit.hub.keymap import KeyMap, peek_config
from attnkit.hub.seq2seq import checked_config, load_converted, read_source, write_hf_directory
from attnkit.layers.positional import sinusoid_table
from attnkit.models.base import CONFIG_NAME, unique_state_dict
from attnkit.models.transformer import Transformer, TransformerConfig

MODEL_TYPE = "marian"
# Fields of older Marian configs (transformers 4's conversions) whose other values describe a layer Marian's is not.
_REFUSED = {
    "normalize_before": (False, "Marian's layers are post-norm"),
    "add_final_layer_norm": (False, "Marian has no LayerNorm after either stack"),
    "normalize_embedding": (False, "Marian has no LayerNorm over the embeddings"),
    "static_position_embeddings": (True, "Marian's positions are the fixed sinusoids"),
    "add_bias_logits": (False, "the logits' bias is final_logits_bias"),
}
# Suffixes of Marian's weight names whose axis 0 (rows) or 1 (columns) indexes the residual stream's features;
# the other tensors (the biases of q/k/v and fc1, final_logits_bias) have no such axis.
_ROWS = ("out_proj.weight", "out_proj.bias", "fc2.weight", "fc2.bias", "layer_norm.weight", "layer_norm.bias")
_COLUMNS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "fc1.weight", "embed_tokens.weight", "shared.weight",
            "lm_head.weight")


def marian_order(d_model: int) -> Tensor:
    """The feature order of Marian's residual stream in attnkit's numbering: Marian's feature j is attnkit's ``order[j]``.

    attnkit's features 0, 2, 4, ... (the sines of section 3.5) come first, then 1, 3, 5, ... (the cosines), as in
    ``MarianSinusoidalPositionalEmbedding``: ``sinusoid_table(T, d)[:, marian_order(d)]`` is Marian's table.
    """
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])  # (d_model,)


def renumber_features(state: dict[str, Tensor], index: Tensor, source: str) -> dict[str, Tensor]:
    """``state`` (Marian's names, prefix removed) with each residual-stream axis reindexed by ``index``.

    Args:
        state: the tensors; keys outside :data:`_ROWS` and :data:`_COLUMNS` pass unchanged.
        index: :func:`marian_order` (attnkit -> Marian) or its inverse ``argsort`` (Marian -> attnkit).
        source: the checkpoint's name, for errors.

    Raises:
        CheckpointError: a residual-stream axis whose length is not d_model, naming the key.
    """
    out: dict[str, Tensor] = {}
    for key, t in state.items():
        axis = 0 if key.endswith(_ROWS) else 1 if key.endswith(_COLUMNS) else None
        if axis is not None and (t.dim() <= axis or t.shape[axis] != index.numel()):
            raise CheckpointError(f"{source}: {key!r} has the shape {tuple(t.shape)}; its axis {axis} should hold "
                                  f"d_model={index.numel()} features")
        out[key] = t if axis is None else t.index_select(axis, index)
    return out


def marian_keys(shared: bool = True) -> KeyMap:
    """The key map of ``MarianMTModel``, its ``model.`` prefix removed: BART's (:func:`attnkit.hub.bart.bart_keys`),
    whose layers transformers copies into Marian, without the embedding LayerNorm and the position tables.

    Args:
        shared: one token table (``shared.weight``), else one per stack (``encoder.embed_tokens``, ``decoder.embed_tokens``).
    """
    bart = bart_keys(shared)
    dropped = ("layernorm_embedding", "embed_positions")
    return KeyMap(rules=tuple(r for r in bart.rules if not any(d in r.source for d in dropped)), ignore=bart.ignore,
                  fused=bart.fused)


def is_hf_marian(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory with a Hugging Face Marian ``config.json``."""
    data = peek_config(path)
    return data is not None and data.get("model_type") == MODEL_TYPE


def marian_config_from_hf(data: dict[str, Any], *, shared: bool = True, source: str = CONFIG_NAME) -> TransformerConfig:
    """A Marian-shaped :class:`TransformerConfig` from a ``MarianConfig`` dict.

    Args:
        data: the ``config.json`` contents (or ``MarianConfig.to_dict()``).
        shared: one token table for both stacks (see :func:`marian_keys`); false where
            ``share_encoder_decoder_embeddings`` is, or where untied stacks hold tables of their own.
        source: the file's name, for errors.

    Returns:
        The config (``output_bias=True``: ``final_logits_bias`` is always in the model).

    Raises:
        ConfigError: a variant attnkit does not express, naming the field.
    """

    def refuse(name: str, why: str) -> None:
        raise ConfigError(f"{source}: {name}={data.get(name)!r} is not supported; {why}")

    if data.get("model_type", MODEL_TYPE) != MODEL_TYPE:
        refuse("model_type", f"use {MODEL_TYPE}")
    if data.get("is_encoder_decoder", True) is False:
        refuse("is_encoder_decoder", "only the encoder-decoder (MarianMTModel) loads")
    for name, (default, why) in _REFUSED.items():
        if name in data and data[name] is not None and data[name] != default:
            refuse(name, why)
    heads, ffn = data.get("encoder_attention_heads", 16), data.get("encoder_ffn_dim", 4096)
    if data.get("decoder_attention_heads", 16) != heads:
        refuse("decoder_attention_heads", f"attnkit's stacks share one head count (encoder_attention_heads={heads})")
    if data.get("decoder_ffn_dim", 4096) != ffn:
        refuse("decoder_ffn_dim", f"attnkit's stacks share one FFN width (encoder_ffn_dim={ffn})")
    act = str(data.get("activation_function", "gelu"))
    if act not in ACTIVATIONS:
        refuse("activation_function", f"use one of {', '.join(ACTIVATIONS)}")
    vocab = data.get("vocab_size", 58101)
    one_table = data.get("share_encoder_decoder_embeddings", True) is not False
    tgt_vocab = data.get("decoder_vocab_size") or vocab
    if one_table and tgt_vocab != vocab:
        refuse("decoder_vocab_size", f"with share_encoder_decoder_embeddings the decoder reads the shared table of "
                                     f"vocab_size={vocab} rows")
    pad, eos = data.get("pad_token_id", 58100), data.get("eos_token_id", 0)
    if not isinstance(pad, int):
        refuse("pad_token_id", "attnkit needs a pad id")
    if not isinstance(eos, int):
        refuse("eos_token_id", "attnkit stops at one EOS id")
    start = data.get("decoder_start_token_id")
    try:
        return TransformerConfig(
            src_vocab_size=vocab,
            tgt_vocab_size=tgt_vocab,
            d_model=data.get("d_model", 1024),
            n_heads=heads,
            d_ff=ffn,
            n_encoder_layers=data.get("encoder_layers", 12),
            n_decoder_layers=data.get("decoder_layers", 12),
            dropout=float(data.get("dropout", 0.1)),
            activation_dropout=float(data.get("activation_dropout", 0.0)),
            activation=ACTIVATIONS[act],  # type: ignore[arg-type]
            norm_position="post",
            norm="layer",
            norm_eps=HF_NORM_EPS,
            positional="sinusoidal",
            max_len=data.get("max_position_embeddings", 1024),
            share_embeddings=one_table and shared,
            tie_output=tied(data),
            scale_embeddings=bool(data.get("scale_embedding", False)),
            attention={"kind": "scaled_dot", "dropout": float(data.get("attention_dropout", 0.0))},
            pad_id=pad,
            bos_id=start if start is not None else pad,  # Marian starts the decoder from the pad id
            eos_id=eos,
            embedding_norm=False,
            output_bias=True,
        )
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def check_positions(table: Tensor, c: TransformerConfig, key: str, source: str) -> None:
    """Raise unless a stored ``embed_positions`` table is Marian's sinusoid table for ``c`` (to its dtype's rounding).

    Raises:
        CheckpointError: another shape or other values (transformers would read them; attnkit's positions are the formula's).
    """
    want = sinusoid_table(c.max_len, c.d_model)[:, marian_order(c.d_model)]  # (max_len, d_model)
    if tuple(table.shape) != tuple(want.shape):
        raise CheckpointError(f"{source}: {key!r} has the shape {tuple(table.shape)}, max_position_embeddings={c.max_len} "
                              f"and d_model={c.d_model} need {tuple(want.shape)}")
    gap = float((table.float() - want).abs().max()) if table.numel() else 0.0
    if not gap <= 4 * torch.finfo(table.dtype if table.is_floating_point() else torch.float32).eps:
        raise CheckpointError(f"{source}: {key!r} is not Marian's sinusoid table (it differs by up to {gap:.3g}); "
                              "transformers would read it, attnkit computes positions from the formula")


def marian_from_hf(config: dict[str, Any] | str | os.PathLike, state: dict[str, Tensor] | None = None) -> Transformer:
    """A :class:`Transformer` from a Hugging Face Marian directory, or from a config dict and its state dict.

    Args:
        config: a directory (``config.json`` + ``model.safetensors``) or a ``MarianConfig`` dict.
        state: the ``MarianMTModel`` state dict, with ``config`` a dict.

    Returns:
        The model (float32 parameters), every key and shape checked.

    Raises:
        CheckpointError: an unsupported variant, a position table other than Marian's, or a missing, surplus or
            misshapen key.
    """
    data, state, cfg_source, weights_source = read_source("marian_from_hf", config, state)
    state = strip_prefix(state)
    table = state.get("shared.weight")
    stacks = [state.get(f"{s}.embed_tokens.weight") for s in ("encoder", "decoder")]
    # Untied (transformers 5): each stack reads its own table, which may have moved away from shared.weight.
    shared = tied(data) or all(t is None or (table is not None and torch.equal(t, table)) for t in stacks)
    c, expected = checked_config(lambda: marian_config_from_hf(data, shared=shared, source=cfg_source), cfg_source)
    if c.tie_output:
        state.pop("lm_head.weight", None)  # Hugging Face ties it to the decoder's table whatever the file holds
    for stack in ("encoder", "decoder"):
        key = f"{stack}.embed_positions.weight"
        if key in state:
            check_positions(state.pop(key), c, f"model.{key}", weights_source)
    if "final_logits_bias" in state:
        state["final_logits_bias"] = state["final_logits_bias"].reshape(-1)
    else:  # Hugging Face creates it as zeros when absent
        state["final_logits_bias"] = torch.zeros(c.tgt_vocab_size)
    state = renumber_features(state, torch.argsort(marian_order(c.d_model)), weights_source)
    optional = ({"tgt_embed.embedding.weight"} if c.share_embeddings else set()) | ({"lm_head.weight"} if c.tie_output else set())
    return load_converted(c, marian_keys(c.share_embeddings), state, expected, weights_source, optional)


def load_hf_marian(path: str | os.PathLike) -> Transformer:
    """:func:`marian_from_hf` of a directory (the loader :func:`attnkit.load` calls)."""
    return marian_from_hf(path)


def marian_config_to_hf(c: TransformerConfig) -> dict[str, Any]:
    """The ``MarianConfig`` dict of a Marian-shaped config.

    Raises:
        ConfigError: naming the first field that Marian does not express, its value and what Marian needs.
    """

    def need(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            value = c
            for part in name.split("."):
                value = getattr(value, part)
            raise ConfigError(f"{name}={value!r} is not Marian-shaped; a Marian checkpoint needs {allowed}")

    need("positional", c.positional == "sinusoidal", "positional=sinusoidal (the fixed sinusoids of section 3.5)")
    need("attention.position.kind", c.attention.position.kind == "none",
         "attention.position.kind=none (positions added to the embeddings only)")
    need("attention.kind", c.attention.kind == "scaled_dot", "attention.kind=scaled_dot")
    need("attention.params", set(c.attention.params) <= {"backend"}, "no attention.params but backend (the kernel's 1/sqrt(d_k) scale)")
    need("norm_position", c.norm_position == "post", "norm_position=post (MarianConfig has no pre-norm option)")
    need("norm", c.norm == "layer", "norm=layer")
    need("norm_eps", c.norm_eps == HF_NORM_EPS, f"norm_eps={HF_NORM_EPS} (nn.LayerNorm's default, which Marian's layers use)")
    need("embedding_norm", not c.embedding_norm, "embedding_norm=false (Marian has no LayerNorm over the embeddings)")
    need("bias", c.bias, "bias=true")
    need("ffn", c.ffn == "mlp", "ffn=mlp")
    need("activation", c.activation in TO_HF_ACTIVATION, f"activation={'|'.join(TO_HF_ACTIVATION)}")
    need("output_scale", c.output_scale == 1.0, "output_scale=1.0")
    return {
        "model_type": MODEL_TYPE,
        "architectures": ["MarianMTModel"],
        "is_encoder_decoder": True,
        "vocab_size": c.src_vocab_size,
        "decoder_vocab_size": c.tgt_vocab_size,
        "share_encoder_decoder_embeddings": c.share_embeddings,
        "d_model": c.d_model,
        "encoder_layers": c.n_encoder_layers,
        "decoder_layers": c.n_decoder_layers,
        "encoder_attention_heads": c.n_heads,
        "decoder_attention_heads": c.n_heads,
        "encoder_ffn_dim": c.d_ff,
        "decoder_ffn_dim": c.d_ff,
        "activation_function": TO_HF_ACTIVATION[c.activation],
        "dropout": c.dropout,
        "attention_dropout": c.attention.dropout,
        "activation_dropout": c.activation_dropout,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "max_position_embeddings": c.max_len,
        "scale_embedding": c.scale_embeddings,
        "init_std": 0.02,
        "pad_token_id": c.pad_id,
        "bos_token_id": c.bos_id,
        "eos_token_id": c.eos_id,
        "decoder_start_token_id": c.bos_id,
        "forced_eos_token_id": None,  # attnkit's decoding forces nothing
        "tie_word_embeddings": c.tie_output,
        "use_cache": True,
    }


def marian_state_to_hf(model: Transformer) -> dict[str, Tensor]:
    """The ``MarianMTModel`` state dict of a Marian-shaped ``model`` (new tensors; the model is untouched).

    The residual stream's features are renumbered by :func:`marian_order`; no position table is written
    (transformers builds Marian's from the formula).
    """
    c = model.config
    state = unique_state_dict(model)  # the tied target embeddings and output layer once
    state["lm_head.bias"] = state["lm_head.bias"] if c.output_bias else torch.zeros(c.tgt_vocab_size)
    hf = marian_keys(c.share_embeddings).from_attnkit(state)
    if c.share_embeddings and not c.tie_output:  # transformers 5 unties the stacks' tables too: write them
        hf["encoder.embed_tokens.weight"], hf["decoder.embed_tokens.weight"] = hf["shared.weight"].clone(), hf["shared.weight"].clone()
    hf = renumber_features(hf, marian_order(c.d_model), "model")
    hf["final_logits_bias"] = hf["final_logits_bias"].reshape(1, -1)
    top = ("final_logits_bias", "lm_head.weight")
    return {(k if k in top else f"model.{k}"): v.contiguous() for k, v in hf.items()}


def save_hf_marian(model: Transformer, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                   extra_files: dict[str, str] | None = None) -> Path:
    """Write ``model`` as a directory that ``MarianMTModel.from_pretrained`` loads.

    Args:
        model: a Marian-shaped :class:`Transformer` (see :func:`marian_config_to_hf`).
        path: the directory to write (atomically).
        tokenizer: a ``tokenizer.json`` to copy in (``attnkit.load`` and ``attnkit translate`` read it there).
        extra_files: name -> text of more files to place beside them (``translation.json``).

    Returns:
        ``path``.

    Raises:
        ConfigError: the model is not Marian-shaped (naming the field).
    """
    hf_config = marian_config_to_hf(model.config)
    hf_state = marian_state_to_hf(model)
    return write_hf_directory(path, hf_config, hf_state, tokenizer, extra_files)


__all__ = ["MODEL_TYPE", "check_positions", "is_hf_marian", "load_hf_marian", "marian_config_from_hf", "marian_config_to_hf",
           "marian_from_hf", "marian_keys", "marian_order", "marian_state_to_hf", "renumber_features", "save_hf_marian"]
