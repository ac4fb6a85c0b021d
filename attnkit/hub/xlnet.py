"""Hugging Face XLNet <-> attnkit XLNet, as declarative key maps (weights and config).

Three architectures convert, each to its attnkit class:

* ``XLNetLMHeadModel`` <-> :class:`~attnkit.models.xlnet.XLNetLM` (the output layer tied to the word embeddings);
* ``XLNetForSequenceClassification`` <-> :class:`~attnkit.models.xlnet_heads.XLNetClassifier`
  (``sequence_summary.summary`` dense + tanh, ``logits_proj``);
* ``XLNetForTokenClassification`` <-> :class:`~attnkit.models.xlnet_heads.XLNetTagger`.

XLNet keeps its attention projections as ``(d_model, n_heads, d_head)`` tensors used in einsums; here
they are ``nn.Linear`` layers. Each is seen as the matrix ``(d_model, n_heads * d_head)`` (the only
step outside the key map), after which ``q``, ``k``, ``v`` and ``r`` are the transposed Linear
weights and ``o`` is the Linear weight itself. Every source tensor must be used and every target filled.

The classifier's summary: Hugging Face's ``"last"`` reads position ``-1`` and its ``"mean"`` averages
every position; attnkit's read the last real token and average the real tokens, the same numbers
without padding (and, for ``"last"``, with XLNet's left padding).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from attnkit.errors import CheckpointError, ConfigError
from attnkit.hub.keymap import KeyMap, Rule, peek_config, read_hf_config, read_hf_weights
from attnkit.io import atomic_directory
from attnkit.models.base import CONFIG_NAME, WEIGHTS_NAME, check_size, unique_state_dict
from attnkit.models.xlnet import XLNetConfig, XLNetLM
from attnkit.models.xlnet_heads import XLNetClassifier, XLNetTagger, XLNetTaskConfig

HEADS: dict[str, type[nn.Module]] = {"LMHeadModel": XLNetLM, "ForSequenceClassification": XLNetClassifier,
                                     "ForTokenClassification": XLNetTagger}
_HEAD_OF_CLASS = {cls: name for name, cls in HEADS.items()}
PROJECTIONS = ("q", "k", "v", "r", "o")  # (d_model, n_heads, d_head) in Hugging Face's files
SUMMARIES = ("first", "last", "mean")


def xlnet_keys(head: str) -> KeyMap:
    """The key map of architecture ``XLNet{head}`` (a key of :data:`HEADS`)."""
    enc = "" if head == "LMHeadModel" else "xlnet."
    layer = "transformer.layer.{i}."
    rules = [Rule("transformer.word_embedding.weight", f"{enc}embed.weight"), Rule("transformer.mask_emb", f"{enc}mask_emb")]
    for p in PROJECTIONS:
        rules.append(Rule(f"{layer}rel_attn.{p}", f"{enc}layers.{{i}}.attn.{p}.weight", "identity" if p == "o" else "transpose"))
    for theirs, ours in (("rel_attn.r_w_bias", "attn.content_bias"), ("rel_attn.r_r_bias", "attn.position_bias"),
                         ("rel_attn.r_s_bias", "attn.segment_bias"), ("rel_attn.seg_embed", "attn.segment_embed"),
                         ("rel_attn.layer_norm.weight", "attn.norm.weight"), ("rel_attn.layer_norm.bias", "attn.norm.bias"),
                         ("ff.layer_1.weight", "w1.weight"), ("ff.layer_1.bias", "w1.bias"),
                         ("ff.layer_2.weight", "w2.weight"), ("ff.layer_2.bias", "w2.bias"),
                         ("ff.layer_norm.weight", "ffn_norm.weight"), ("ff.layer_norm.bias", "ffn_norm.bias")):
        rules.append(Rule(layer + theirs, f"{enc}layers.{{i}}.{ours}"))
    if head == "LMHeadModel":
        rules.append(Rule("lm_loss.bias", "lm_head.bias"))
    elif head == "ForSequenceClassification":
        rules += [Rule("sequence_summary.summary.weight", "summary.weight"), Rule("sequence_summary.summary.bias", "summary.bias"),
                  Rule("logits_proj.weight", "out.weight"), Rule("logits_proj.bias", "out.bias")]
    else:
        rules += [Rule("classifier.weight", "out.weight"), Rule("classifier.bias", "out.bias")]
    return KeyMap(rules=tuple(rules), ignore=("lm_loss.weight",))  # the tied copy of the word embeddings


def _as_matrices(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face's ``(d_model, n_heads, d_head)`` projections as ``(d_model, n_heads * d_head)``."""
    return {k: v.reshape(v.shape[0], -1) if k.rsplit(".", 1)[-1] in PROJECTIONS and "rel_attn" in k else v for k, v in state.items()}


def is_hf_xlnet(path: str | os.PathLike) -> bool:
    """A directory with a Hugging Face XLNet ``config.json`` (attnkit's own XLNet configs have no ``model_type`` of ``xlnet``)."""
    data = peek_config(path)
    return data is not None and data.get("model_type") == "xlnet" and "n_layer" in data


def config_from_hf(data: Any, source: str = CONFIG_NAME) -> XLNetConfig:
    """The attnkit config of a Hugging Face XLNet config (a dict or a ``transformers.XLNetConfig``), refusing what is not implemented."""
    if not isinstance(data, dict):
        data = data.to_dict()
    for name, want, default in (("attn_type", "bi", "bi"), ("bi_data", False, False), ("untie_r", True, True), ("same_length", False, False)):
        if data.get(name, default) != want:
            raise ConfigError(f"{source}: {name}={data.get(name)!r} is not supported; only {name}={want!r} converts")
    if data.get("clamp_len", -1) not in (-1, None) and data["clamp_len"] > 0:
        raise ConfigError(f"{source}: clamp_len={data['clamp_len']} is not supported; only -1 (no clamping) converts")
    d_model, n_head = data.get("d_model", 1024), data.get("n_head", 16)
    if data.get("d_head", d_model // n_head) * n_head != d_model:
        raise ConfigError(f"{source}: d_head={data.get('d_head')} times n_head={n_head} is not d_model={d_model}")
    pad = data.get("pad_token_id")
    try:
        return XLNetConfig(vocab_size=data.get("vocab_size", 32000), d_model=d_model, n_layers=data.get("n_layer", 24), n_heads=n_head,
                           d_ff=data.get("d_inner", 4096), activation=data.get("ff_activation", "gelu"), dropout=data.get("dropout", 0.1),
                           norm_eps=data.get("layer_norm_eps", 1e-12), init_std=data.get("initializer_range", 0.02),
                           pad_id=pad if pad is not None else 5)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _head_of(data: dict[str, Any], source: str) -> str:
    archs = data.get("architectures") or ["XLNetLMHeadModel"]
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else repr(archs)
    head = arch.removeprefix("XLNet")
    if head not in HEADS:
        raise CheckpointError(f"{source}: architecture {arch!r} is not supported; use one of {', '.join('XLNet' + h for h in HEADS)}")
    return head


def _task_config(data: dict[str, Any], encoder: XLNetConfig, source: str) -> XLNetTaskConfig:
    from attnkit.hub.bert import hf_labels

    labels = hf_labels(data, source)
    summary = data.get("summary_type", "last")
    if summary not in SUMMARIES:
        raise ConfigError(f"{source}: summary_type={summary!r} is not supported; use one of {', '.join(SUMMARIES)}")
    for name, want in (("summary_use_proj", True), ("summary_activation", "tanh"), ("summary_proj_to_labels", False)):
        if data.get(name, want) != want:
            raise ConfigError(f"{source}: {name}={data.get(name)!r} is not supported; only {want!r} converts")
    if data.get("summary_first_dropout", 0.0):
        raise ConfigError(f"{source}: summary_first_dropout={data['summary_first_dropout']} is not supported; only 0 converts")
    return XLNetTaskConfig(encoder=encoder, num_labels=len(labels) or data.get("num_labels", 2), labels=labels,
                           summary=summary, classifier_dropout=data.get("summary_last_dropout", 0.1))


def xlnet_from_state(data: dict[str, Any], state: dict[str, Tensor], source: str = "the checkpoint") -> nn.Module:
    """The attnkit model of a Hugging Face XLNet config dict and state dict, checking every key and shape."""
    head = _head_of(data, source)
    try:
        encoder = config_from_hf(data, source)
        config: Any = encoder if head == "LMHeadModel" else _task_config(data, encoder, source)
        meta = check_size(HEADS[head], config, prefix=f"{source}: ")  # shapes on the meta device: nothing allocated yet
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if "lm_loss.weight" in state and not torch.equal(state["lm_loss.weight"], state.get("transformer.word_embedding.weight", torch.empty(0))):
        raise CheckpointError(f"{source}: lm_loss.weight differs from the word embeddings; untied output layers are not supported")
    own = meta.state_dict()
    converted = xlnet_keys(head).to_attnkit(_as_matrices(state), own, source, optional={"lm_head.weight"})
    model = HEADS[head](config)
    model.load_state_dict(converted, strict=False)
    return model


def xlnet_from_hf(hf_model: Any) -> nn.Module:
    """The attnkit model holding the weights of a ``transformers`` XLNet model object (LM, classifier or tagger)."""
    data = hf_model.config.to_dict()
    data.update(architectures=[type(hf_model).__name__], id2label={str(k): v for k, v in (data.get("id2label") or {}).items()})
    return xlnet_from_state(data, dict(hf_model.state_dict()), f"{type(hf_model).__name__}")


def load_hf_xlnet(path: str | os.PathLike) -> nn.Module:
    """Build the attnkit model of a Hugging Face XLNet directory (``config.json`` + safetensors)."""
    data, _ = read_hf_config(path)
    state, weights_path = read_hf_weights(path)
    if not isinstance(data.get("architectures"), list):
        data = {**data, "architectures": ["XLNetLMHeadModel"]}
    return xlnet_from_state(data, state, str(weights_path))


def config_to_hf(model: nn.Module) -> dict[str, Any]:
    """The Hugging Face config dict of an attnkit XLNet model (LM, classifier or tagger)."""
    head = _HEAD_OF_CLASS.get(type(model))
    if head is None:
        raise ConfigError(f"a {type(model).__name__} does not convert to Hugging Face XLNet; use an XLNetLM, XLNetClassifier or XLNetTagger")
    task = model.config if head != "LMHeadModel" else None
    c: XLNetConfig = task.encoder if task is not None else model.config  # type: ignore[union-attr, assignment]
    out: dict[str, Any] = {
        "model_type": "xlnet", "architectures": [f"XLNet{head}"], "vocab_size": c.vocab_size, "d_model": c.d_model,
        "n_layer": c.n_layers, "n_head": c.n_heads, "d_head": c.d_model // c.n_heads, "d_inner": c.d_ff,
        "ff_activation": c.activation, "untie_r": True, "attn_type": "bi", "initializer_range": c.init_std,
        "layer_norm_eps": c.norm_eps, "dropout": c.dropout, "mem_len": None, "reuse_len": None, "bi_data": False,
        "clamp_len": -1, "same_length": False, "pad_token_id": c.pad_id, "tie_word_embeddings": True,
    }
    if task is not None:
        labels = task.labels or tuple(f"LABEL_{i}" for i in range(task.num_labels))
        out.update({"num_labels": task.num_labels, "id2label": {str(i): n for i, n in enumerate(labels)},
                    "label2id": {n: i for i, n in enumerate(labels)}, "summary_type": task.summary, "summary_use_proj": True,
                    "summary_activation": "tanh", "summary_last_dropout": task.head_dropout})
    return out


def save_hf_xlnet(model: nn.Module, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> Path:
    """Write ``model`` as a Hugging Face directory that the matching ``transformers`` XLNet class loads.

    Args:
        model: an :class:`XLNetLM`, :class:`XLNetClassifier` or :class:`XLNetTagger`.
        path: the directory to write (atomically).
        tokenizer: a ``tokenizer.json`` to copy beside the weights.

    Returns:
        The directory.
    """
    config = config_to_hf(model)
    head = _HEAD_OF_CLASS[type(model)]
    own = {k: v for k, v in unique_state_dict(model).items() if k != "lm_head.weight"}  # tied to the embeddings
    state = xlnet_keys(head).from_attnkit(own)
    c = config
    for k in [k for k in state if k.rsplit(".", 1)[-1] in PROJECTIONS and "rel_attn" in k]:
        state[k] = state[k].reshape(c["d_model"], c["n_head"], c["d_head"])
    if head == "LMHeadModel":
        state["lm_loss.weight"] = state["transformer.word_embedding.weight"]
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / "tokenizer.json")

    atomic_directory(Path(path), fill)
    return Path(path)


__all__ = ["HEADS", "config_from_hf", "config_to_hf", "is_hf_xlnet", "load_hf_xlnet", "save_hf_xlnet",
           "xlnet_from_hf", "xlnet_from_state", "xlnet_keys"]
