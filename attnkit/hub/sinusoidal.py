"""transformers' encoder-decoders of BART's layers with fixed sinusoids in halves <-> :class:`~attnkit.models.transformer.Transformer`:
``MarianMTModel`` (post-norm, :mod:`attnkit.hub.marian`) and ``PegasusForConditionalGeneration`` (pre-norm,
:mod:`attnkit.hub.pegasus`).

Both build their layers as BART's (:mod:`attnkit.hub.bart`: attention and FFN with biases, LayerNorm eps 1e-5), add
the fixed sinusoids of Vaswani et al. (2017, section 3.5) to both stacks' token embeddings (multiplied by
sqrt(d_model) when ``scale_embedding``, section 3.4), have no LayerNorm over the embeddings, and add a bias to the
logits (the ``final_logits_bias`` buffer). A :class:`SinusoidFamily` holds what sets one class apart (where its
layers normalise, its config's defaults and vocabularies, whether its ``save_pretrained`` writes the position
tables); its methods convert to and from that class.

The position table's layout differs from attnkit's. Section 3.5 (and attnkit) interleave the features,
sin(pos / 10000^(2i/d)) at 2i and the cosine of the same angle at 2i+1; ``MarianSinusoidalPositionalEmbedding``
and ``PegasusSinusoidalPositionalEmbedding`` put the sines in the first half and the cosines in the second.
transformers rebuilds that table from the formula when a checkpoint lacks it and reads it when a checkpoint has it,
so a table in attnkit's layout would not survive (Marian's ``save_pretrained`` drops it) or would be read as it is.
Export therefore renumbers the features instead: every axis of length d_model that indexes the residual stream
(token tables' columns, the input columns of each projection that reads the stream, the output rows of each that
writes to it, LayerNorm gains and shifts, those of the norms after the stacks included) is permuted by
:func:`halves_order`. Residual additions and LayerNorm statistics do not depend on the order of the features and
every linear map sees its inputs and outputs renumbered alike, so the permuted model computes the same logits; its
hidden states are the original ones permuted. Import applies the inverse permutation, and reads a stored table only
to check that it is the formula's in halves (another table is refused: transformers would use it).

Not expressed (refused by field): different head counts or FFN widths in the two stacks, learned positions
(``static_position_embeddings=false``), the norm position or embedding norm that the other family has (older configs'
``normalize_before``, ``add_final_layer_norm``, ``normalize_embedding``), a list of EOS ids; attnkit configs of
another shape. Layer dropout acts only in training and is not carried over; ``forced_eos_token_id`` and the other
generation settings are left to the caller (attnkit's decoding forces nothing). attnkit's sinusoids extend past
``max_len``; transformers' tables end there. A kernel ``backend`` (``attention.params``) chooses how attention runs,
not what it computes, and is not written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from attnkit.errors import CheckpointError, ConfigError
from attnkit.hub.bart import (HF_NORM_EPS, TO_HF_ACTIVATION, bart_keys, bart_layer_config, bart_layer_state, build_config,
                               layer_fields, read_bart_layers, refuse, tied_copies, with_model_prefix)
from attnkit.hub.keymap import KeyMap, Rule, peek_config
from attnkit.hub.seq2seq import load_converted, write_hf_directory
from attnkit.layers.positional import sinusoid_table
from attnkit.models.base import CONFIG_NAME
from attnkit.models.transformer import Transformer, TransformerConfig

# Suffixes of the weight names (BART's) whose axis 0 (rows) or 1 (columns) indexes the residual stream's features;
# the other tensors (the biases of q/k/v and fc1, final_logits_bias, the position tables) have no such axis.
_ROWS = ("out_proj.weight", "out_proj.bias", "fc2.weight", "fc2.bias", "layer_norm.weight", "layer_norm.bias")
_COLUMNS = ("q_proj.weight", "k_proj.weight", "v_proj.weight", "fc1.weight", "embed_tokens.weight", "shared.weight",
            "lm_head.weight")
STACKS = ("encoder", "decoder")


def halves_order(d_model: int) -> Tensor:
    """The feature order of the residual stream in halves, in attnkit's numbering: the family's feature j is attnkit's ``order[j]``.

    attnkit's features 0, 2, 4, ... (the sines of section 3.5) come first, then 1, 3, 5, ... (the cosines), as in
    ``MarianSinusoidalPositionalEmbedding`` and ``PegasusSinusoidalPositionalEmbedding``:
    ``sinusoid_table(T, d)[:, halves_order(d)]`` is their table.
    """
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])  # (d_model,)


def renumber_features(state: dict[str, Tensor], index: Tensor, source: str) -> dict[str, Tensor]:
    """``state`` (BART's names, ``model.`` prefix removed) with each residual-stream axis reindexed by ``index``.

    Args:
        state: the tensors; keys outside :data:`_ROWS` and :data:`_COLUMNS` pass unchanged.
        index: :func:`halves_order` (attnkit -> halves) or its inverse ``argsort`` (halves -> attnkit).
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


@dataclass(frozen=True, eq=False)  # one object per family: compared and hashed by identity (its bound methods too)
class SinusoidFamily:
    """One of transformers' sinusoidal classes of BART's layers; its methods convert to and from it.

    Attributes:
        model_type: ``config.json``'s ``model_type``.
        name: the family's name in messages; ``{name}Config`` is its config class.
        architecture: the transformers class that loads an export.
        norm_position: ``"post"``: x = LayerNorm(x + Sublayer(x)), no norm after either stack; ``"pre"``:
            x + Sublayer(LayerNorm(x)) and a LayerNorm after each stack (``encoder.layer_norm``, ``decoder.layer_norm``).
        refused: fields of older configs -> (the one value that describes this family's layer, why).
        vocab_size: the config class's default ``vocab_size``.
        pad_id: its default ``pad_token_id`` (also the decoder's start where ``decoder_start_token_id`` is absent).
        eos_id: its default ``eos_token_id``.
        decoder_vocab: the config has ``decoder_vocab_size`` and ``share_encoder_decoder_embeddings`` (the target
            vocabulary may differ from the source's); else one ``vocab_size`` serves both stacks.
        stores_positions: ``save_pretrained`` writes the position tables (and ``from_pretrained`` reports them missing
            when absent), so export writes them too.
    """

    model_type: str
    name: str
    architecture: str
    norm_position: Literal["post", "pre"]
    refused: dict[str, tuple[Any, str]]
    vocab_size: int
    pad_id: int
    eos_id: int
    decoder_vocab: bool
    stores_positions: bool

    def keys(self, shared: bool = True) -> KeyMap:
        """The key map, ``model.`` prefix removed: BART's (:func:`attnkit.hub.bart.bart_keys`) without the embedding
        LayerNorm and the position tables, with the norms after the stacks where the layers are pre-norm.

        Args:
            shared: one token table (``shared.weight``), else one per stack (``encoder.embed_tokens``, ``decoder.embed_tokens``).
        """
        bart = bart_keys(shared)
        rules = [r for r in bart.rules if not any(d in r.source for d in ("layernorm_embedding", "embed_positions"))]
        if self.norm_position == "pre":
            rules += [Rule(f"{s}.layer_norm.{p}", f"{s}.norm.{p}") for s in STACKS for p in ("weight", "bias")]
        return KeyMap(rules=tuple(rules), ignore=bart.ignore, fused=bart.fused)

    def is_hf(self, path: str | os.PathLike) -> bool:
        """True if ``path`` is a directory with a ``config.json`` of this family."""
        data = peek_config(path)
        return data is not None and data.get("model_type") == self.model_type

    def config_from_hf(self, data: dict[str, Any], *, shared: bool = True, source: str = CONFIG_NAME) -> TransformerConfig:
        """The :class:`TransformerConfig` of a config dict of this family.

        Args:
            data: the ``config.json`` contents (or the config's ``to_dict()``).
            shared: one token table for both stacks (see :meth:`keys`); false where ``share_encoder_decoder_embeddings``
                is, or where untied stacks hold tables of their own.
            source: the file's name, for errors.

        Returns:
            The config (``output_bias=True``: ``final_logits_bias`` is always in the model).

        Raises:
            ConfigError: a variant attnkit does not express, naming the field.
        """
        fields = layer_fields(data, model_type=self.model_type, architecture=self.architecture, refused=self.refused,
                              eos=self.eos_id, source=source)
        vocab = data.get("vocab_size", self.vocab_size)
        one_table, tgt_vocab = True, vocab
        if self.decoder_vocab:
            one_table = data.get("share_encoder_decoder_embeddings", True) is not False
            tgt_vocab = data.get("decoder_vocab_size") or vocab
            if one_table and tgt_vocab != vocab:
                refuse(data, "decoder_vocab_size", f"with share_encoder_decoder_embeddings the decoder reads the shared table "
                                                   f"of vocab_size={vocab} rows", source)
        pad = data.get("pad_token_id", self.pad_id)
        if not isinstance(pad, int):
            refuse(data, "pad_token_id", "attnkit needs a pad id", source)
        start = data.get("decoder_start_token_id")
        return build_config(source, **fields, src_vocab_size=vocab, tgt_vocab_size=tgt_vocab, norm_position=self.norm_position,
                            positional="sinusoidal", share_embeddings=one_table and shared, pad_id=pad,
                            bos_id=start if start is not None else pad,  # the decoder starts from the pad id by default
                            embedding_norm=False)

    def check_positions(self, table: Tensor, c: TransformerConfig, key: str, source: str) -> None:
        """Raise unless a stored ``embed_positions`` table is the sinusoid table in halves for ``c`` (to its dtype's rounding).

        Raises:
            CheckpointError: another shape or other values (transformers would read them; attnkit's positions are the formula's).
        """
        want = sinusoid_table(c.max_len, c.d_model)[:, halves_order(c.d_model)]  # (max_len, d_model)
        if tuple(table.shape) != tuple(want.shape):
            raise CheckpointError(f"{source}: {key!r} has the shape {tuple(table.shape)}, max_position_embeddings={c.max_len} "
                                  f"and d_model={c.d_model} need {tuple(want.shape)}")
        gap = float((table.float() - want).abs().max()) if table.numel() else 0.0
        if not gap <= 4 * torch.finfo(table.dtype if table.is_floating_point() else torch.float32).eps:
            raise CheckpointError(f"{source}: {key!r} is not {self.name}'s sinusoid table (it differs by up to {gap:.3g}); "
                                  "transformers would read it, attnkit computes positions from the formula")

    def from_hf(self, config: dict[str, Any] | str | os.PathLike, state: dict[str, Tensor] | None = None) -> Transformer:
        """A :class:`Transformer` from a directory of this family, or from a config dict and its state dict.

        Args:
            config: a directory (``config.json`` + ``model.safetensors``) or a config dict.
            state: the model's state dict, with ``config`` a dict.

        Returns:
            The model (float32 parameters), every key and shape checked.

        Raises:
            CheckpointError: an unsupported variant, a position table other than the formula's, or a missing,
                surplus or misshapen key.
        """
        c, state, expected, weights_source = read_bart_layers(f"{self.model_type}_from_hf", config, state, self.config_from_hf)
        for stack in STACKS:
            key = f"{stack}.embed_positions.weight"
            if key in state:
                self.check_positions(state.pop(key), c, f"model.{key}", weights_source)
        state = renumber_features(state, torch.argsort(halves_order(c.d_model)), weights_source)
        return load_converted(c, self.keys(c.share_embeddings), state, expected, weights_source, tied_copies(c))

    def load_hf(self, path: str | os.PathLike) -> Transformer:
        """:meth:`from_hf` of a directory (the loader :func:`attnkit.load` calls)."""
        return self.from_hf(path)

    def config_to_hf(self, c: TransformerConfig) -> dict[str, Any]:
        """The config dict of this family for ``c``.

        Raises:
            ConfigError: naming the first field that the family does not express, its value and what it needs.
        """

        def need(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                value = c
                for part in name.split("."):
                    value = getattr(value, part)
                raise ConfigError(f"{name}={value!r} is not {self.name}-shaped; a {self.name} checkpoint needs {allowed}")

        other = "pre" if self.norm_position == "post" else "post"
        need("positional", c.positional == "sinusoidal", "positional=sinusoidal (the fixed sinusoids of section 3.5)")
        need("attention.position.kind", c.attention.position.kind == "none",
             "attention.position.kind=none (positions added to the embeddings only)")
        need("attention.kind", c.attention.kind == "scaled_dot", "attention.kind=scaled_dot")
        need("attention.params", set(c.attention.params) <= {"backend"}, "no attention.params but backend (the kernel's 1/sqrt(d_k) scale)")
        need("norm_position", c.norm_position == self.norm_position,
             f"norm_position={self.norm_position} ({self.name}Config has no {other}-norm option)")
        need("norm", c.norm == "layer", "norm=layer")
        need("norm_eps", c.norm_eps == HF_NORM_EPS, f"norm_eps={HF_NORM_EPS} (nn.LayerNorm's default, which {self.name}'s layers use)")
        need("embedding_norm", not c.embedding_norm, f"embedding_norm=false ({self.name} has no LayerNorm over the embeddings)")
        need("bias", c.bias, "bias=true")
        need("ffn", c.ffn == "mlp", "ffn=mlp")
        need("activation", c.activation in TO_HF_ACTIVATION, f"activation={'|'.join(TO_HF_ACTIVATION)}")
        need("output_scale", c.output_scale == 1.0, "output_scale=1.0")
        vocabularies: dict[str, Any] = {"vocab_size": c.src_vocab_size}
        if self.decoder_vocab:
            vocabularies.update(decoder_vocab_size=c.tgt_vocab_size, share_encoder_decoder_embeddings=c.share_embeddings)
        else:
            need("tgt_vocab_size", c.tgt_vocab_size == c.src_vocab_size,
                 f"tgt_vocab_size=src_vocab_size={c.src_vocab_size} ({self.name}Config has one vocab_size)")
            need("share_embeddings", c.share_embeddings or not c.tie_output,
                 "share_embeddings=true, or tie_output=false (transformers 5 then reads a table per stack)")
        return {"model_type": self.model_type, "architectures": [self.architecture], **vocabularies, **bart_layer_config(c)}

    def state_to_hf(self, model: Transformer) -> dict[str, Tensor]:
        """The state dict of this family's class for ``model`` (new tensors; the model is untouched).

        The residual stream's features are renumbered by :func:`halves_order`; the position tables are written
        (in halves) only where the family's ``save_pretrained`` writes them.
        """
        c = model.config
        order = halves_order(c.d_model)
        # With a table per stack, PegasusModel still has shared.weight (unread): written for its loader; MarianModel has none.
        hf = renumber_features(bart_layer_state(model, self.keys(c.share_embeddings), shared_copy=not self.decoder_vocab), order, "model")
        if self.stores_positions:
            table = sinusoid_table(c.max_len, c.d_model)[:, order]  # (max_len, d_model)
            hf.update({f"{s}.embed_positions.weight": table.clone() for s in STACKS})
        return with_model_prefix(hf)

    def save(self, model: Transformer, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
             extra_files: dict[str, str] | None = None) -> Path:
        """Write ``model`` as a directory that the family's ``from_pretrained`` loads.

        Args:
            model: a :class:`Transformer` of the family's shape (see :meth:`config_to_hf`).
            path: the directory to write (atomically).
            tokenizer: a ``tokenizer.json`` to copy in (``attnkit.load`` and ``attnkit translate`` read it there).
            extra_files: name -> text of more files to place beside them (``translation.json``).

        Returns:
            ``path``.

        Raises:
            ConfigError: the model is not of the family's shape (naming the field).
        """
        hf_config = self.config_to_hf(model.config)
        hf_state = self.state_to_hf(model)
        return write_hf_directory(path, hf_config, hf_state, tokenizer, extra_files)


__all__ = ["SinusoidFamily", "halves_order", "renumber_features"]
