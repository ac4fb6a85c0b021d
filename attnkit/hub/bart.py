"""Hugging Face BART checkpoints (``BartForConditionalGeneration``) <-> :class:`attnkit.models.transformer.Transformer`.

BART (Lewis et al. 2020, "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language Generation,
Translation, and Comprehension", section 2.1) is the encoder-decoder of Vaswani et al. with GELU in place of
ReLU; its released code (which ``transformers`` follows) fixes the rest. Each part is an option of
:class:`~attnkit.models.transformer.TransformerConfig`:

* post-norm layers, x = LayerNorm(x + Sublayer(x)) with no norm after either stack: ``norm_position="post"``,
  ``norm="layer"`` (eps 1e-5, which Hugging Face does not configure);
* attention with biases and the 1/sqrt(d_k) scale (Vaswani et al. 2017, eq. 1), the FFN
  ``GELU(x W_1 + b_1) W_2 + b_2``: ``bias=True``, ``activation="gelu"`` (``activation_function``);
* learned absolute positions, one table per stack, stored with two extra leading rows that are never read
  (``BartLearnedPositionalEmbedding`` looks up position + 2): ``positional="learned"``, ``share_positions=False``;
  import drops the two rows and export writes them as zeros;
* a LayerNorm over token embedding + position in both stacks (``layernorm_embedding``): ``embedding_norm=True``;
* the embeddings multiplied by sqrt(d_model) when ``scale_embedding`` (false in the released models):
  ``scale_embeddings``;
* one embedding table for the encoder, the decoder and (with ``tie_word_embeddings``) the output layer, and a
  bias on the logits (the ``final_logits_bias`` buffer): ``share_embeddings``, ``tie_output``, ``output_bias=True``;
  without ``tie_word_embeddings`` transformers 5 gives each stack its own table (``encoder.embed_tokens``,
  ``decoder.embed_tokens``; ``shared`` is then unread): ``share_embeddings=False`` where the two differ;
* the decoder starts from ``decoder_start_token_id`` (the EOS id, 2, in the released models; BOS 0, pad 1):
  ``bos_id`` is the decoder's start token.

Not expressed (refused by field): different head counts or FFN widths in the two stacks, the pre-norm variants
of other checkpoints (``normalize_before``, ``add_final_layer_norm``: mBART's layer), sinusoidal positions
(``static_position_embeddings``), a list of EOS ids; attnkit configs that are not BART-shaped. ``bos_token_id``
(the token that starts a source) is the tokenizer's business; export writes the decoder's start id there.
Layer dropout (``encoder_layerdrop``) acts only in training and is not carried over. attnkit trains
``output_bias``; Hugging Face keeps ``final_logits_bias`` as a buffer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, NoReturn

import torch
from torch import Tensor

from attnkit.errors import CheckpointError, ConfigError
from attnkit.hub.keymap import Fuse, KeyMap, Rule, peek_config
from attnkit.hub.seq2seq import checked_config, load_converted, read_source, write_hf_directory
from attnkit.models.base import CONFIG_NAME, unique_state_dict
from attnkit.models.transformer import Transformer, TransformerConfig

MODEL_TYPE = "bart"
POSITION_OFFSET = 2  # BartLearnedPositionalEmbedding: position p is row p + 2
HF_NORM_EPS = 1e-5  # nn.LayerNorm's default, which BART's layers use
# BartConfig.activation_function values (ACT2FN names) and their attnkit names; MarianConfig's and PegasusConfig's are the same.
ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu",
               "swish": "silu"}
TO_HF_ACTIVATION = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new", "silu": "silu"}
# Fields of older or related configs (fairseq conversions, mBART) whose non-default values BART's layer lacks.
_REFUSED = {
    "normalize_before": (False, "BART's layers are post-norm (pre-norm with a final norm is mBART's layer)"),
    "add_final_layer_norm": (False, "BART has no LayerNorm after either stack"),
    "static_position_embeddings": (False, "BART's positions are learned"),
    "add_bias_logits": (False, "the logits' bias is final_logits_bias"),
    "normalize_embedding": (True, "BART normalises embeddings + positions"),
    "extra_pos_embeddings": (POSITION_OFFSET, f"BART's position table has {POSITION_OFFSET} leading unused rows"),
}


def bart_keys(shared: bool = True) -> KeyMap:
    """The key map of ``BartForConditionalGeneration``, its ``model.`` prefix removed (:func:`strip_prefix`).

    Args:
        shared: one token table (``shared.weight``; the stacks' ``embed_tokens`` are its copies), else one per
            stack (``encoder.embed_tokens``, ``decoder.embed_tokens``; ``shared.weight`` is then unused).
    """
    tables = [Rule("shared.weight", "src_embed.embedding.weight")] if shared else [
        Rule("encoder.embed_tokens.weight", "src_embed.embedding.weight"),
        Rule("decoder.embed_tokens.weight", "tgt_embed.embedding.weight")]
    rules: list[Rule] = [
        *tables,
        Rule("lm_head.weight", "lm_head.weight"),
        Rule("final_logits_bias", "lm_head.bias"),  # reshaped (1, V) <-> (V,) around the map
    ]
    fused: list[Fuse] = []
    for stack, embed, norms in (("encoder", "src_embed", ("res_attn", "res_ffn")),
                                ("decoder", "tgt_embed", ("res_self", "res_cross", "res_ffn"))):
        hf, at = f"{stack}.layers.{{i}}", f"{stack}.layers.{{i}}"
        rules.append(Rule(f"{stack}.embed_positions.weight", f"{embed}.positions.embedding.weight"))  # rows sliced around the map
        hf_norms = ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm") if stack == "decoder" \
            else ("self_attn_layer_norm", "final_layer_norm")
        for p in ("weight", "bias"):
            rules += [
                Rule(f"{stack}.layernorm_embedding.{p}", f"{embed}.norm.{p}"),
                Rule(f"{hf}.self_attn.out_proj.{p}", f"{at}.self_attn.out_proj.{p}"),
                Rule(f"{hf}.fc1.{p}", f"{at}.ffn.w1.{p}"),
                Rule(f"{hf}.fc2.{p}", f"{at}.ffn.w2.{p}"),
            ]
            rules += [Rule(f"{hf}.{h}.{p}", f"{at}.{a}.norm.{p}") for h, a in zip(hf_norms, norms)]
            fused.append(Fuse(tuple(f"{hf}.self_attn.{x}_proj.{p}" for x in "qkv"), f"{at}.self_attn.qkv_proj.{p}"))
    cross, at = "decoder.layers.{i}.encoder_attn", "decoder.layers.{i}.cross_attn"
    for p in ("weight", "bias"):
        rules += [Rule(f"{cross}.q_proj.{p}", f"{at}.q_proj.{p}"), Rule(f"{cross}.out_proj.{p}", f"{at}.out_proj.{p}")]
        fused.append(Fuse((f"{cross}.k_proj.{p}", f"{cross}.v_proj.{p}"), f"{at}.kv_proj.{p}"))
    return KeyMap(
        rules=tuple(rules),
        ignore=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight") if shared else ("shared.weight",),
        fused=tuple(fused),
    )


def is_hf_bart(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory with a Hugging Face BART ``config.json``."""
    data = peek_config(path)
    return data is not None and data.get("model_type") == MODEL_TYPE


def bart_config_from_hf(data: dict[str, Any], *, shared: bool = True, source: str = CONFIG_NAME) -> TransformerConfig:
    """A BART-shaped :class:`TransformerConfig` from a ``BartConfig`` dict.

    Args:
        data: the ``config.json`` contents (or ``BartConfig.to_dict()``).
        shared: one token table for both stacks (see :func:`bart_keys`); only without ``tie_word_embeddings``
            may the stacks have their own (transformers 5 unties them all then).
        source: the file's name, for errors.

    Returns:
        The config (``output_bias=True``: ``final_logits_bias`` is always in the checkpoint).

    Raises:
        ConfigError: a variant attnkit does not express, naming the field.
    """
    fields = layer_fields(data, model_type=MODEL_TYPE, architecture="BartForConditionalGeneration", refused=_REFUSED, eos=2,
                          source=source)
    pad, start, vocab = data.get("pad_token_id", 1), data.get("decoder_start_token_id"), data.get("vocab_size", 50265)
    return build_config(source, **fields, src_vocab_size=vocab, tgt_vocab_size=vocab, norm_position="post", positional="learned",
                        share_embeddings=shared or fields["tie_output"], pad_id=pad if pad is not None else 1,
                        bos_id=start if start is not None else fields["eos_id"], embedding_norm=True, share_positions=False)


def refuse(data: dict[str, Any], name: str, why: str, source: str) -> NoReturn:
    """Raise the :class:`ConfigError` that names the config field ``name``, its value in ``data`` and ``why``."""
    raise ConfigError(f"{source}: {name}={data.get(name)!r} is not supported; {why}")


def layer_fields(data: dict[str, Any], *, model_type: str, architecture: str, refused: dict[str, tuple[Any, str]], eos: int,
                 source: str) -> dict[str, Any]:
    """The :class:`TransformerConfig` fields that every config of BART's layers (``BartConfig``, ``MarianConfig``,
    ``PegasusConfig``) sets alike, once what attnkit's stacks do not express is refused.

    Args:
        data: the ``config.json`` contents.
        model_type: the family's ``model_type``.
        architecture: its encoder-decoder class, for the message that refuses a decoder-only config.
        refused: field -> (the one value the family's layer allows, why); an absent or null field passes.
        eos: the family's default ``eos_token_id``.
        source: the file's name, for errors.

    Returns:
        Sizes, dropouts, activation, LayerNorm (eps 1e-5), ``max_len``, ``tie_output``, ``scale_embeddings``, attention,
        ``eos_id`` and ``output_bias=True`` (``final_logits_bias`` is always in the model); the family adds its
        vocabularies, positions, norm position, pad and start ids.

    Raises:
        ConfigError: another model type, a decoder-only config, a refused field at another value, different head
            counts or FFN widths in the two stacks, an activation attnkit lacks or a list of EOS ids; naming the field.
    """
    if data.get("model_type", model_type) != model_type:
        refuse(data, "model_type", f"use {model_type}", source)
    if data.get("is_encoder_decoder", True) is False:
        refuse(data, "is_encoder_decoder", f"only the encoder-decoder ({architecture}) loads", source)
    for name, (allowed, why) in refused.items():
        if name in data and data[name] is not None and data[name] != allowed:
            refuse(data, name, why, source)
    heads, ffn = data.get("encoder_attention_heads", 16), data.get("encoder_ffn_dim", 4096)
    if data.get("decoder_attention_heads", 16) != heads:
        refuse(data, "decoder_attention_heads", f"attnkit's stacks share one head count (encoder_attention_heads={heads})", source)
    if data.get("decoder_ffn_dim", 4096) != ffn:
        refuse(data, "decoder_ffn_dim", f"attnkit's stacks share one FFN width (encoder_ffn_dim={ffn})", source)
    act = str(data.get("activation_function", "gelu"))
    if act not in ACTIVATIONS:
        refuse(data, "activation_function", f"use one of {', '.join(ACTIVATIONS)}", source)
    eos_id = data.get("eos_token_id", eos)
    if not isinstance(eos_id, int):
        refuse(data, "eos_token_id", "attnkit stops at one EOS id", source)
    return dict(
        d_model=data.get("d_model", 1024),
        n_heads=heads,
        d_ff=ffn,
        n_encoder_layers=data.get("encoder_layers", 12),
        n_decoder_layers=data.get("decoder_layers", 12),
        dropout=float(data.get("dropout", 0.1)),
        activation_dropout=float(data.get("activation_dropout", 0.0)),
        activation=ACTIVATIONS[act],
        norm="layer",
        norm_eps=HF_NORM_EPS,
        max_len=data.get("max_position_embeddings", 1024),
        tie_output=tied(data),
        scale_embeddings=bool(data.get("scale_embedding", False)),
        attention={"kind": "scaled_dot", "dropout": float(data.get("attention_dropout", 0.0))},
        eos_id=eos_id,
        output_bias=True,
    )


def build_config(source: str, **fields: Any) -> TransformerConfig:
    """``TransformerConfig(**fields)``, its error prefixed with ``source`` (the config's file)."""
    try:
        return TransformerConfig(**fields)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def tied(data: dict[str, Any]) -> bool:
    """Whether ``BartConfig`` ties the output layer (and, in transformers 5, the stacks' token tables) to ``shared``."""
    return data.get("tie_word_embeddings", True) is not False


def strip_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The state dict with ``BartForConditionalGeneration``'s ``model.`` prefix removed (a ``BartModel``'s
    keys have none)."""
    return {k.removeprefix("model."): v for k, v in state.items()}


def read_bart_layers(
    caller: str, config: dict[str, Any] | str | os.PathLike, state: dict[str, Tensor] | None,
    make_config: Callable[..., TransformerConfig],
) -> tuple[TransformerConfig, dict[str, Tensor], dict[str, Tensor], str]:
    """The steps that every import of BART's layers (BART, Marian, Pegasus) takes before its own.

    The checkpoint is read (:func:`~attnkit.hub.seq2seq.read_source`) and its ``model.`` prefix removed; the stacks
    read one token table where the output is tied (transformers 5 ties the stacks' tables with it) or where each
    stack's stored table equals ``shared.weight``; a tied ``lm_head.weight`` is dropped (Hugging Face ties it whatever
    the file holds) and ``final_logits_bias`` becomes a vector (zeros where absent, as Hugging Face creates it).

    Args:
        caller: the importing function's name, for errors.
        config: a directory or a config dict.
        state: the state dict, with ``config`` a dict.
        make_config: ``make_config(data, shared=..., source=...)``, the family's config translation.

    Returns:
        ``(config, state dict, the model's expected state dict, the weights' name)``.

    Raises:
        CheckpointError: unreadable files, or a config that ``make_config`` refuses.
    """
    data, state, cfg_source, weights_source = read_source(caller, config, state)
    state = strip_prefix(state)
    table = state.get("shared.weight")
    stacks = [state.get(f"{s}.embed_tokens.weight") for s in ("encoder", "decoder")]
    # Untied (transformers 5): each stack reads its own table, which may have moved away from shared.weight.
    shared = tied(data) or all(t is None or (table is not None and torch.equal(t, table)) for t in stacks)
    c, expected = checked_config(lambda: make_config(data, shared=shared, source=cfg_source), cfg_source)
    if c.tie_output:
        state.pop("lm_head.weight", None)
    if "final_logits_bias" in state:
        state["final_logits_bias"] = state["final_logits_bias"].reshape(-1)
    else:
        state["final_logits_bias"] = torch.zeros(c.tgt_vocab_size)
    return c, state, expected, weights_source


def tied_copies(c: TransformerConfig) -> set[str]:
    """attnkit's keys that follow others under ``c`` (the target table, the output layer), which a checkpoint may lack."""
    return ({"tgt_embed.embedding.weight"} if c.share_embeddings else set()) | ({"lm_head.weight"} if c.tie_output else set())


def bart_layer_state(model: Transformer, keys: KeyMap, *, shared_copy: bool = True) -> dict[str, Tensor]:
    """``model``'s tensors in the names of ``keys`` (a map of BART's layers, ``model.`` prefix not yet added; new tensors).

    The output bias is written as zeros where ``model`` has none (``final_logits_bias`` is always in the model);
    one table with an untied output is copied to both stacks (transformers 5 reads a table per stack then); with a
    table per stack, ``shared.weight`` (unread) is written as the encoder's where ``shared_copy``.
    """
    c = model.config
    state = unique_state_dict(model)  # the tied target embeddings and output layer once
    state["lm_head.bias"] = state["lm_head.bias"] if c.output_bias else torch.zeros(c.tgt_vocab_size)
    hf = keys.from_attnkit(state)
    if c.share_embeddings and not c.tie_output:
        hf["encoder.embed_tokens.weight"], hf["decoder.embed_tokens.weight"] = hf["shared.weight"].clone(), hf["shared.weight"].clone()
    elif not c.share_embeddings and shared_copy:
        hf["shared.weight"] = hf["encoder.embed_tokens.weight"].clone()
    return hf


def with_model_prefix(hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """The ``...ForConditionalGeneration`` state dict of :func:`bart_layer_state`'s tensors: ``final_logits_bias`` as
    ``(1, V)``, every key but it and ``lm_head.weight`` under ``model.``, every tensor contiguous."""
    hf["final_logits_bias"] = hf["final_logits_bias"].reshape(1, -1)
    top = ("final_logits_bias", "lm_head.weight")
    return {(k if k in top else f"model.{k}"): v.contiguous() for k, v in hf.items()}


def bart_layer_config(c: TransformerConfig) -> dict[str, Any]:
    """The fields of ``c`` that every config of BART's layers (``BartConfig``, ``MarianConfig``, ``PegasusConfig``)
    writes alike; the family adds its ``model_type``, class and vocabularies."""
    return {
        "is_encoder_decoder": True,
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


def bart_from_hf(config: dict[str, Any] | str | os.PathLike, state: dict[str, Tensor] | None = None) -> Transformer:
    """A :class:`Transformer` from a Hugging Face BART directory, or from a config dict and its state dict.

    Args:
        config: a directory (``config.json`` + ``model.safetensors``) or a ``BartConfig`` dict.
        state: the ``BartForConditionalGeneration`` state dict, with ``config`` a dict.

    Returns:
        The model (float32 parameters), every key and shape checked.

    Raises:
        CheckpointError: an unsupported variant, or a missing, surplus or misshapen key.
    """
    c, state, expected, weights_source = read_bart_layers("bart_from_hf", config, state, bart_config_from_hf)
    for stack in ("encoder", "decoder"):
        key = f"{stack}.embed_positions.weight"
        if key in state:
            rows = state[key].shape[0]
            if rows != c.max_len + POSITION_OFFSET:
                raise CheckpointError(f"{weights_source}: 'model.{key}' has {rows} rows, max_position_embeddings="
                                      f"{c.max_len} needs {c.max_len + POSITION_OFFSET}")
            state[key] = state[key][POSITION_OFFSET:]
    return load_converted(c, bart_keys(c.share_embeddings), state, expected, weights_source, tied_copies(c))


def load_hf_bart(path: str | os.PathLike) -> Transformer:
    """:func:`bart_from_hf` of a directory (the loader :func:`attnkit.load` calls)."""
    return bart_from_hf(path)


def bart_config_to_hf(c: TransformerConfig) -> dict[str, Any]:
    """The ``BartConfig`` dict of a BART-shaped config.

    Raises:
        ConfigError: naming the first field that BART does not express.
    """

    def need(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{name} is not BART-shaped; a BART checkpoint needs {allowed}")

    need("positional", c.positional == "learned" and c.attention.position.kind == "none",
         "positional=learned and attention.position.kind=none")
    need("attention.kind", c.attention.kind == "scaled_dot" and not c.attention.params, "scaled_dot with its 1/sqrt(d_k) scale")
    need("norm", c.norm == "layer" and c.norm_position == "post", "norm=layer and norm_position=post")
    need("norm_eps", c.norm_eps == HF_NORM_EPS, f"{HF_NORM_EPS}")
    need("embedding_norm", c.embedding_norm, "embedding_norm=true")
    need("bias", c.bias, "bias=true")
    need("share_embeddings", c.share_embeddings or not c.tie_output,
         "share_embeddings=true, or tie_output=false (transformers 5 then reads a table per stack)")
    need("activation", c.ffn == "mlp" and c.activation in TO_HF_ACTIVATION,
         f"ffn=mlp with {', '.join(TO_HF_ACTIVATION)}")
    need("output_scale", c.output_scale == 1.0, "1.0")
    return {"model_type": MODEL_TYPE, "architectures": ["BartForConditionalGeneration"], "vocab_size": c.tgt_vocab_size,
            **bart_layer_config(c)}


def bart_state_to_hf(model: Transformer) -> dict[str, Tensor]:
    """The ``BartForConditionalGeneration`` state dict of a BART-shaped ``model`` (new tensors; the model is untouched)."""
    c = model.config
    hf = bart_layer_state(model, bart_keys(c.share_embeddings))
    # one table for both stacks (shared learned positions): BART stores one per stack
    hf.setdefault("decoder.embed_positions.weight", hf["encoder.embed_positions.weight"])
    for stack in ("encoder", "decoder"):
        table = hf[f"{stack}.embed_positions.weight"]
        hf[f"{stack}.embed_positions.weight"] = torch.cat([table.new_zeros(POSITION_OFFSET, c.d_model), table])
    return with_model_prefix(hf)


def save_hf_bart(model: Transformer, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                 extra_files: dict[str, str] | None = None) -> Path:
    """Write ``model`` as a directory that ``BartForConditionalGeneration.from_pretrained`` loads.

    Args:
        model: a BART-shaped :class:`Transformer` (see :func:`bart_config_to_hf`).
        path: the directory to write (atomically).
        tokenizer: a ``tokenizer.json`` to copy in.
        extra_files: name -> text of more files to place beside them (``translation.json``).

    Returns:
        ``path``.

    Raises:
        ConfigError: the model is not BART-shaped (naming the field).
    """
    hf_config = bart_config_to_hf(model.config)
    hf_state = bart_state_to_hf(model)
    return write_hf_directory(path, hf_config, hf_state, tokenizer, extra_files)


__all__ = ["MODEL_TYPE", "bart_config_from_hf", "bart_config_to_hf", "bart_from_hf", "bart_keys", "bart_layer_config",
           "bart_layer_state", "bart_state_to_hf", "build_config", "is_hf_bart", "layer_fields", "load_hf_bart", "read_bart_layers", "refuse",
           "save_hf_bart", "strip_prefix", "tied", "tied_copies", "with_model_prefix"]
