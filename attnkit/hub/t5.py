"""Hugging Face T5 checkpoints (``T5ForConditionalGeneration``) <-> :class:`attnkit.models.transformer.Transformer`.

T5 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", section 2.1) is the encoder-decoder of Vaswani et al. with these changes, each an
option of :class:`~attnkit.models.transformer.TransformerConfig`:

* layer normalisation without bias or re-centering, before each sublayer, and once more after each
  stack: ``norm="rms"``, ``norm_position="pre"``;
* no biases in any linear layer: ``bias=False``;
* attention logits ``q k^T`` without the 1/sqrt(d_k) factor (Mesh TensorFlow folds it into the
  initialisation of the queries): the kernel's ``scale=1.0`` on import; on export another scale is
  folded into the query weights (:func:`fold_query_scale`);
* no position embeddings; instead a learned scalar per (bucket of j - i, head) added to the logits,
  one table per stack shared by its layers, bidirectional in the encoder, causal in the decoder's
  self-attention and absent from cross-attention: ``attention.position.kind="t5_bias"``;
* the FFN ``max(0, x W_i) W_o`` (``feed_forward_proj="relu"``), or in T5 v1.1 the gated GELU
  ``(GELU(x W_i0) * x W_i1) W_o`` (Shazeer 2020; ``"gated-gelu"``, with the tanh GELU): ``ffn="gated"``;
* one embedding table for the encoder, the decoder and (in T5 1.0) the output layer, the embeddings
  unscaled, and the decoder's final state multiplied by d_model**-0.5 before a tied output layer:
  ``share_embeddings``, ``scale_embeddings=False``, ``output_scale``;
* the decoder starts from the pad id: ``bos_id = pad_id``.

Weights: q/k/v are fused into ``qkv_proj`` (cross-attention: k/v into ``kv_proj``), v1.1's ``wi_0``/``wi_1``
into the gated FFN's ``w1`` (gate rows first), and each stack's ``relative_attention_bias`` (held by its
first block) is the shared table of its first layer.

Not expressed (refused by field): ``d_kv * num_heads != d_model`` (e.g. T5 v1.1 small, T5 3B/11B), a list
of EOS ids, and attnkit configs that are not T5-shaped. T5 applies dropout also after each stack's final
norm; attnkit does not, which matters only in training.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from attnkit.errors import ConfigError
from attnkit.hub.keymap import Fuse, KeyMap, Rule, peek_config
from attnkit.hub.seq2seq import checked_config, load_converted, read_source, write_hf_directory
from attnkit.models.base import CONFIG_NAME, unique_state_dict
from attnkit.models.transformer import Transformer, TransformerConfig

MODEL_TYPES = ("t5", "mt5")
# T5Config.dense_act_fn values and their attnkit names ("gated-gelu" uses gelu_new, the tanh form).
_ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "silu": "silu"}
_PROJ = {("mlp", "relu"): "relu", ("mlp", "gelu"): "gelu", ("gated", "gelu_tanh"): "gated-gelu",
         ("gated", "silu"): "gated-silu", ("gated", "relu"): "gated-relu"}


def t5_keys(gated: bool) -> KeyMap:
    """The key map of a T5 model (``gated``: v1.1's ``wi_0``/``wi_1`` FFN, else ``wi``)."""
    rules: list[Rule] = [
        Rule("shared.weight", "src_embed.embedding.weight"),
        Rule("lm_head.weight", "lm_head.weight"),
        Rule("encoder.final_layer_norm.weight", "encoder.norm.weight"),
        Rule("decoder.final_layer_norm.weight", "decoder.norm.weight"),
    ]
    fused: list[Fuse] = []
    # (stack, index of the FFN sublayer, attnkit names of the norms before each sublayer)
    for stack, ffn, norms in (("encoder", 1, ("res_attn", "res_ffn")), ("decoder", 2, ("res_self", "res_cross", "res_ffn"))):
        hf, at = f"{stack}.block.{{i}}", f"{stack}.layers.{{i}}"
        rules += [
            Rule(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                 f"{stack}.layers.0.self_attn.position.module.table.weight"),
            Rule(f"{hf}.layer.0.SelfAttention.o.weight", f"{at}.self_attn.out_proj.weight"),
            Rule(f"{hf}.layer.{ffn}.DenseReluDense.wo.weight", f"{at}.ffn.w2.weight"),
        ]
        rules += [Rule(f"{hf}.layer.{n}.layer_norm.weight", f"{at}.{norm}.norm.weight") for n, norm in enumerate(norms)]
        fused.append(Fuse(tuple(f"{hf}.layer.0.SelfAttention.{p}.weight" for p in "qkv"), f"{at}.self_attn.qkv_proj.weight"))
        if gated:
            fused.append(Fuse((f"{hf}.layer.{ffn}.DenseReluDense.wi_0.weight", f"{hf}.layer.{ffn}.DenseReluDense.wi_1.weight"),
                              f"{at}.ffn.w1.weight"))
        else:
            rules.append(Rule(f"{hf}.layer.{ffn}.DenseReluDense.wi.weight", f"{at}.ffn.w1.weight"))
    cross, at = "decoder.block.{i}.layer.1.EncDecAttention", "decoder.layers.{i}.cross_attn"
    rules += [Rule(f"{cross}.q.weight", f"{at}.q_proj.weight"), Rule(f"{cross}.o.weight", f"{at}.out_proj.weight")]
    fused.append(Fuse((f"{cross}.k.weight", f"{cross}.v.weight"), f"{at}.kv_proj.weight"))
    return KeyMap(
        rules=tuple(rules),
        # Tied copies of shared.weight, and a cross-attention table that Hugging Face creates in some
        # conversions but never uses (cross-attention has no position bias).
        ignore=("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"),
        fused=tuple(fused),
    )


def is_hf_t5(path: str | os.PathLike) -> bool:
    """True if ``path`` is a directory with a Hugging Face T5 (or mT5) ``config.json``."""
    data = peek_config(path)
    return data is not None and data.get("model_type") in MODEL_TYPES


def scales_output(data: dict[str, Any]) -> bool:
    """Whether Hugging Face scales the decoder output by d_model**-0.5: ``scale_decoder_outputs`` where
    saved (transformers 5), else ``tie_word_embeddings`` unless it is false (transformers 4)."""
    if "scale_decoder_outputs" in data:
        return bool(data["scale_decoder_outputs"])
    return data.get("tie_word_embeddings", True) is not False


def t5_config_from_hf(data: dict[str, Any], *, tie_output: bool | None = None, source: str = CONFIG_NAME) -> TransformerConfig:
    """A T5-shaped :class:`TransformerConfig` from a ``T5Config`` dict.

    Args:
        data: the ``config.json`` contents (or ``T5Config.to_dict()``).
        tie_output: whether the output layer is the embedding table; default: where the output is scaled.
        source: the file's name, for errors.

    Returns:
        The config.

    Raises:
        ConfigError: a variant attnkit does not express, naming the field.
    """

    def refuse(name: str, why: str) -> None:
        raise ConfigError(f"{source}: {name}={data.get(name)!r} is not supported; {why}")

    if data.get("model_type", "t5") not in MODEL_TYPES:
        refuse("model_type", f"use one of {', '.join(MODEL_TYPES)}")
    if data.get("is_encoder_decoder", True) is False:
        refuse("is_encoder_decoder", "only the encoder-decoder (T5ForConditionalGeneration) loads")
    d, heads, d_kv = data.get("d_model", 512), data.get("num_heads", 8), data.get("d_kv", 64)
    if d_kv * heads != d:
        refuse("d_kv", f"attnkit's heads split d_model: d_kv * num_heads must equal d_model={d} (num_heads={heads})")
    proj = str(data.get("feed_forward_proj", "relu"))
    parts = proj.split("-")
    gated = len(parts) == 2 and parts[0] == "gated"
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if len(parts) > 2 or (len(parts) == 2 and not gated) or act not in _ACTIVATIONS:
        refuse("feed_forward_proj", "use relu, gelu, gated-gelu, gated-silu or gated-relu")
    pad, eos = data.get("pad_token_id", 0), data.get("eos_token_id", 1)
    if not isinstance(eos, int):
        refuse("eos_token_id", "attnkit stops at one EOS id")
    start = data.get("decoder_start_token_id")
    scaled = scales_output(data)
    rate = float(data.get("dropout_rate", 0.1))
    try:
        return TransformerConfig(
            src_vocab_size=data.get("vocab_size", 32128),
            tgt_vocab_size=data.get("vocab_size", 32128),
            d_model=d,
            n_heads=heads,
            d_ff=data.get("d_ff", 2048),
            n_encoder_layers=data.get("num_layers", 6),
            n_decoder_layers=data.get("num_decoder_layers") or data.get("num_layers", 6),
            dropout=rate,
            activation_dropout=rate,
            activation=_ACTIVATIONS[act],  # type: ignore[arg-type]
            norm_position="pre",
            norm="rms",
            norm_eps=data.get("layer_norm_epsilon", 1e-6),
            max_len=data.get("n_positions") or 512,
            share_embeddings=True,
            tie_output=scaled if tie_output is None else tie_output,
            scale_embeddings=False,
            attention={"kind": "scaled_dot", "dropout": rate, "params": {"scale": 1.0},
                       "position": {"kind": "t5_bias", "n_buckets": data.get("relative_attention_num_buckets", 32),
                                    "max_distance": data.get("relative_attention_max_distance", 128)}},
            pad_id=pad if pad is not None else 0,
            bos_id=start if start is not None else (pad if pad is not None else 0),
            eos_id=eos,
            ffn="gated" if gated else "mlp",
            bias=False,
            output_scale=d**-0.5 if scaled else 1.0,
        )
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def t5_from_hf(config: dict[str, Any] | str | os.PathLike, state: dict[str, Tensor] | None = None) -> Transformer:
    """A :class:`Transformer` from a Hugging Face T5 directory, or from a config dict and its state dict.

    Args:
        config: a directory (``config.json`` + ``model.safetensors``) or a ``T5Config`` dict.
        state: the ``T5ForConditionalGeneration`` state dict, with ``config`` a dict.

    Returns:
        The model (float32 parameters), every key and shape checked.

    Raises:
        CheckpointError: an unsupported variant, or a missing, surplus or misshapen key.
    """
    data, state, cfg_source, weights_source = read_source("t5_from_hf", config, state)
    state = dict(state)
    shared = state.get("shared.weight")
    head = state.get("lm_head.weight")
    tied = head is None or (shared is not None and torch.equal(head, shared))
    if tied and not scales_output(data):  # a tied head without the scale (T5 v1.1 in transformers 5): a copy of the table
        tied = False
        if head is None and shared is not None:
            state["lm_head.weight"] = shared
    elif tied:
        state.pop("lm_head.weight", None)
    c, expected = checked_config(lambda: t5_config_from_hf(data, tie_output=tied, source=cfg_source), cfg_source)
    # Tied copies: the target embeddings, the later layers' shared bias tables, a tied output layer.
    optional = {k for k in expected if k.startswith("tgt_embed.") or (".position." in k and ".layers.0." not in k)}
    if c.tie_output:
        optional.add("lm_head.weight")
    return load_converted(c, t5_keys(c.ffn == "gated"), state, expected, weights_source, optional)


def load_hf_t5(path: str | os.PathLike) -> Transformer:
    """:func:`t5_from_hf` of a directory (the loader :func:`attnkit.load` calls)."""
    return t5_from_hf(path)


def t5_config_to_hf(c: TransformerConfig) -> dict[str, Any]:
    """The ``T5Config`` dict of a T5-shaped config.

    Raises:
        ConfigError: naming the first field that T5 does not express.
    """
    pos = c.attention.position

    def need(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{name} is not T5-shaped; a T5 checkpoint needs {allowed}")

    need("attention.position.kind", pos.kind == "t5_bias" and pos.bidirectional is None, "t5_bias (bidirectional: null)")
    need("attention.kind", c.attention.kind == "scaled_dot" and set(c.attention.params) <= {"scale"},
         "scaled_dot (its scale is folded into the query weights)")
    need("norm", c.norm == "rms" and c.norm_position == "pre", "norm=rms and norm_position=pre")
    need("bias", not c.bias, "bias=false")
    need("share_embeddings", c.share_embeddings and not c.scale_embeddings, "share_embeddings=true and scale_embeddings=false")
    need("activation", (c.ffn, c.activation) in _PROJ, "ffn=mlp with relu or gelu, or ffn=gated with gelu_tanh, silu or relu")
    scaled = math.isclose(c.output_scale, c.d_model**-0.5, rel_tol=1e-6)
    need("output_scale", scaled or c.output_scale == 1.0, f"1.0 or d_model**-0.5 = {c.d_model**-0.5}")
    need("tie_output", c.tie_output or not scaled, "a tied output layer when the output is scaled (T5 1.0)")
    return {
        "model_type": "t5",
        "architectures": ["T5ForConditionalGeneration"],
        "is_encoder_decoder": True,
        "vocab_size": c.tgt_vocab_size,
        "d_model": c.d_model,
        "d_kv": c.head_dim,
        "d_ff": c.d_ff,
        "num_heads": c.n_heads,
        "num_layers": c.n_encoder_layers,
        "num_decoder_layers": c.n_decoder_layers,
        "relative_attention_num_buckets": pos.n_buckets,
        "relative_attention_max_distance": pos.max_distance,
        "dropout_rate": c.dropout,
        "layer_norm_epsilon": c.norm_eps,
        "feed_forward_proj": _PROJ[(c.ffn, c.activation)],
        "n_positions": c.max_len,
        "pad_token_id": c.pad_id,
        "eos_token_id": c.eos_id,
        "decoder_start_token_id": c.bos_id,
        "tie_word_embeddings": scaled,  # transformers 4 reads the scale from it
        "scale_decoder_outputs": scaled,
        "initializer_factor": 1.0,
    }


def fold_query_scale(state: dict[str, Tensor], c: TransformerConfig) -> None:
    """Multiply the query projections in ``state`` by the kernel's logit scale, so that T5's unscaled
    ``(s W_q x)^T (W_k y)`` equals ``s (W_q x)^T (W_k y)`` (the 1/sqrt(d_k) of Vaswani et al. 2017, eq. 1,
    moved into the weights as T5 does); new tensors replace the entries, the model is untouched."""
    scale = float(c.attention.params.get("scale", c.head_dim**-0.5))
    if scale == 1.0:
        return
    for key in list(state):
        if key.endswith("self_attn.qkv_proj.weight"):
            q, kv = state[key].split([c.d_model, 2 * c.d_model], dim=0)  # rows: q, then k and v
            state[key] = torch.cat([q * scale, kv], dim=0)
        elif key.endswith("cross_attn.q_proj.weight"):
            state[key] = state[key] * scale


def save_hf_t5(model: Transformer, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
               extra_files: dict[str, str] | None = None) -> Path:
    """Write ``model`` as a directory that ``T5ForConditionalGeneration.from_pretrained`` loads.

    Args:
        model: a T5-shaped :class:`Transformer` (see :func:`t5_config_to_hf`).
        path: the directory to write (atomically).
        tokenizer: a ``tokenizer.json`` to copy in.
        extra_files: name -> text of more files to place beside them (``translation.json``).

    Returns:
        ``path``.

    Raises:
        ConfigError: the model is not T5-shaped (naming the field).
    """
    c = model.config
    hf_config = t5_config_to_hf(c)
    state = unique_state_dict(model)  # the tied target embeddings, bias tables and output layer once
    if not hf_config["scale_decoder_outputs"] and c.tie_output:  # unscaled T5 has its own output layer
        state["lm_head.weight"] = state["src_embed.embedding.weight"].clone()
    fold_query_scale(state, c)
    hf_state = {k: v.contiguous() for k, v in t5_keys(c.ffn == "gated").from_attnkit(state).items()}
    return write_hf_directory(path, hf_config, hf_state, tokenizer, extra_files)


__all__ = ["MODEL_TYPES", "is_hf_t5", "load_hf_t5", "save_hf_t5", "t5_config_from_hf", "t5_config_to_hf", "t5_from_hf", "t5_keys", "fold_query_scale"]
