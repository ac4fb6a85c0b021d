"""Hugging Face BERT, RoBERTa, ALBERT and ELECTRA checkpoints <-> :mod:`attnkit.models.bert`.

A Hugging Face directory holds ``config.json`` (``"model_type"`` one of ``bert``,
``roberta``, ``albert``, ``electra``) and ``model.safetensors``. The four families share one
attnkit encoder; their key maps differ only in the base prefix, the layer names (ALBERT
keeps its one shared layer under ``albert_layer_groups.0.albert_layers.0``) and the heads.
Separate query/key/value projections are fused into attnkit's ``qkv_proj`` (:class:`Fuse`).

``config.json``'s ``architectures[0]`` picks the head: ``*Model`` -> :class:`BertModel`,
``*ForMaskedLM`` / ``*ForPreTraining`` -> :class:`BertMLM` (ELECTRA's ``ForPreTraining``
is its discriminator), ``*ForSequenceClassification``, ``*ForTokenClassification``,
``*ForQuestionAnswering``. The next-sentence (BERT) and sentence-order (ALBERT) heads of
pre-training checkpoints are the only weights dropped on purpose. Tied copies of the
embeddings (``decoder.weight``) and of the output bias, when stored, must equal their source.
``position_embedding_type`` ``relative_key`` / ``relative_key_query`` becomes
``attention.position`` (:mod:`attnkit.positions.relative`), each layer's ``distance_embedding``
its table; the absolute position table is kept, and unused, as in Hugging Face's model.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from attnkit.errors import CheckpointError, ConfigError
from attnkit.hub.keymap import Fuse, KeyMap, Rule, peek_config, read_hf_config, read_hf_weights
from attnkit.io import atomic_directory
from attnkit.models.base import CONFIG_NAME, WEIGHTS_NAME, check_size, stored_tensors, unique_state_dict
from attnkit.models.bert import BertConfig, BertModel
from attnkit.models.bert_heads import BertClassifier, BertMLM, BertQA, BertTagger, BertTaskConfig, ElectraDiscriminator
from attnkit.models.transformer import AttentionConfig
from attnkit.positions.config import PositionConfig

WB = ("weight", "bias")


@dataclass(frozen=True)
class Family:
    """What differs between the BERT relatives in the Hugging Face format."""

    name: str  # config.json model_type and the base prefix of head checkpoints
    arch: str  # class-name prefix: "Bert" -> BertForMaskedLM
    layer: str  # HF prefix of layer {i} under the base
    layer_names: tuple[tuple[str, str], ...]  # (HF, attnkit) module names inside a layer, q/k/v excepted
    qkv: str  # HF module holding query/key/value inside a layer
    project: str | None  # HF name of the E -> H projection, relative to the base
    pooler: str  # HF name of the pooler Linear, relative to the base
    mlm: str  # HF prefix of the masked-LM head (at top level)
    mlm_names: tuple[tuple[str, str], ...]
    classifier: str  # attnkit BertTaskConfig.classifier
    ignore: tuple[str, ...] = ()


_BERT_LAYER = (
    ("attention.output.dense", "self_attn.out_proj"),
    ("attention.output.LayerNorm", "res_attn.norm"),
    ("intermediate.dense", "ffn.w1"),
    ("output.dense", "ffn.w2"),
    ("output.LayerNorm", "res_ffn.norm"),
)
_BERT_MLM = (("transform.dense", "transform"), ("transform.LayerNorm", "norm"))

FAMILIES: dict[str, Family] = {
    "bert": Family("bert", "Bert", "encoder.layer.{i}", _BERT_LAYER, "attention.self", None, "pooler.dense",
                   "cls.predictions", _BERT_MLM, "pooler", ignore=("cls.seq_relationship.weight", "cls.seq_relationship.bias")),
    "roberta": Family("roberta", "Roberta", "encoder.layer.{i}", _BERT_LAYER, "attention.self", None, "pooler.dense",
                      "lm_head", (("dense", "transform"), ("layer_norm", "norm")), "cls_tanh"),
    "albert": Family(
        "albert", "Albert", "encoder.albert_layer_groups.0.albert_layers.0",
        (("attention.dense", "self_attn.out_proj"), ("attention.LayerNorm", "res_attn.norm"), ("ffn", "ffn.w1"),
         ("ffn_output", "ffn.w2"), ("full_layer_layer_norm", "res_ffn.norm")),
        "attention", "encoder.embedding_hidden_mapping_in", "pooler",
        "predictions", (("dense", "transform"), ("LayerNorm", "norm")), "pooler",
        ignore=("sop_classifier.classifier.weight", "sop_classifier.classifier.bias"),
    ),
    "electra": Family("electra", "Electra", "encoder.layer.{i}", _BERT_LAYER, "attention.self", "embeddings_project",
                      "pooler.dense", "generator_predictions", (), "cls_gelu"),
}

# Head kind -> attnkit class; the HF architecture suffix of each.
HEADS: dict[str, type[nn.Module]] = {
    "Model": BertModel, "ForMaskedLM": BertMLM, "ForSequenceClassification": BertClassifier,
    "ForTokenClassification": BertTagger, "ForQuestionAnswering": BertQA, "Discriminator": ElectraDiscriminator,
}
_HEAD_OF_CLASS = {cls: kind for kind, cls in HEADS.items()}

# hidden_act values of the HF configs and their attnkit names.
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "quick_gelu": "gelu_sigmoid"}
_RELATIVE = ("relative_key", "relative_key_query")  # BERT's position_embedding_type values with relative scores
_TO_HF_ACT = {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new", "gelu_sigmoid": "quick_gelu"}


def _pairs(hf: str, ak: str) -> list[Rule]:
    return [Rule(f"{hf}.{w}", f"{ak}.{w}") for w in WB]


@cache
def keymap(family: str, head: str, pooler: bool, projected: bool, relative: bool = False) -> KeyMap:
    """The key map of one family and head (``head`` a key of :data:`HEADS`), HF names <-> attnkit names;
    ``relative``: each layer's ``distance_embedding`` (``position_embedding_type`` relative_key[_query])."""
    f = FAMILIES[family]
    hf = "" if head == "Model" else f"{f.name}."  # HF head checkpoints nest the encoder under the family name
    ak = "" if head == "Model" else "bert."
    shared = f.layer.endswith(".0")  # ALBERT: one layer stored once
    layer = f"{ak}layers.{'0' if shared else '{i}'}"
    rules = [
        Rule(f"{hf}embeddings.word_embeddings.weight", f"{ak}embed.tokens.weight"),
        Rule(f"{hf}embeddings.token_type_embeddings.weight", f"{ak}embed.segments.weight"),
        Rule(f"{hf}embeddings.position_embeddings.weight", f"{ak}embed.positions.embedding.weight"),
        *_pairs(f"{hf}embeddings.LayerNorm", f"{ak}embed.norm"),
    ]
    if projected:
        rules += _pairs(f"{hf}{f.project}", f"{ak}embed.project")
    for hf_name, ak_name in f.layer_names:
        rules += _pairs(f"{hf}{f.layer}.{hf_name}", f"{layer}.{ak_name}")
    if relative:
        rules.append(Rule(f"{hf}{f.layer}.{f.qkv}.distance_embedding.weight", f"{layer}.self_attn.position.module.distance_embedding.weight"))
    if pooler:
        rules += _pairs(f"{hf}{f.pooler}", f"{ak}pooler")
    if head == "ForMaskedLM":
        for hf_name, ak_name in f.mlm_names:
            rules += _pairs(f"{f.mlm}.{hf_name}", ak_name)
        rules.append(Rule(f"{f.mlm}.bias", "decoder.bias"))
    elif head == "ForSequenceClassification":
        rules += _pairs("classifier", "out") if f.classifier == "pooler" else [*_pairs("classifier.dense", "dense"), *_pairs("classifier.out_proj", "out")]
    elif head == "ForTokenClassification":
        rules += _pairs("classifier", "out")
    elif head == "ForQuestionAnswering":
        rules += _pairs("qa_outputs", "out")
    elif head == "Discriminator":
        rules += [*_pairs("discriminator_predictions.dense", "dense"), *_pairs("discriminator_predictions.dense_prediction", "out")]
    fused = tuple(Fuse(tuple(f"{hf}{f.layer}.{f.qkv}.{p}.{w}" for p in ("query", "key", "value")), f"{layer}.self_attn.qkv_proj.{w}") for w in WB)
    return KeyMap(rules=tuple(rules), ignore=(f"{hf}embeddings.position_ids", *f.ignore), fused=fused)


def _tied_copies(family: str, head: str) -> dict[str, str]:
    """HF keys that, when stored, are copies of another HF key (copy -> source)."""
    if head != "ForMaskedLM":
        return {}
    f = FAMILIES[family]
    return {f"{f.mlm}.decoder.weight": f"{f.name}.embeddings.word_embeddings.weight", f"{f.mlm}.decoder.bias": f"{f.mlm}.bias"}


def hf_family(path: str | os.PathLike) -> str | None:
    """The family name if ``path`` is a directory with a Hugging Face BERT/RoBERTa/ALBERT/ELECTRA ``config.json``."""
    data = peek_config(path)
    if data is None or "d_model" in data:  # attnkit's own BertConfig (model_type "bert") has d_model
        return None
    family = data.get("model_type")
    return family if family in FAMILIES else None


def is_hf_bert(path: str | os.PathLike) -> bool:
    return hf_family(path) is not None


def head_from_architecture(family: str, data: dict[str, Any], source: str) -> str:
    """The :data:`HEADS` key named by ``architectures[0]`` (``BertModel`` when absent)."""
    f = FAMILIES[family]
    archs = data.get("architectures") or [f"{f.arch}Model"]
    if not isinstance(archs, list) or not isinstance(archs[0], str):
        raise CheckpointError(f"{source}: architectures={archs!r} is not a list of class names such as [\"{f.arch}Model\"]")
    arch = archs[0]
    suffix = arch.removeprefix(f.arch)
    if suffix == "ForPreTraining":
        suffix = "Discriminator" if family == "electra" else "ForMaskedLM"
    unsupported = suffix == "Discriminator" and family != "electra" or suffix == "ForMaskedLM" and family == "electra"
    if not arch.startswith(f.arch) or suffix not in HEADS or unsupported:
        known = ", ".join(f"{f.arch}{s}" for s in HEADS if s not in ("Discriminator", "ForMaskedLM" if family == "electra" else ""))
        raise CheckpointError(f"{source}: architecture {arch!r} is not supported; use one of {known}")
    return suffix


def config_from_hf(data: dict[str, Any], family: str, *, pooler: bool = True, source: str = CONFIG_NAME) -> BertConfig:
    """A :class:`BertConfig` from a Hugging Face config dict; unsupported variants raise ConfigError naming the field."""

    def need(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {name}={data.get(name)!r} is not supported; {allowed}")

    act = data.get("hidden_act", "gelu")
    need("hidden_act", act in _ACTIVATIONS, f"use one of {', '.join(_ACTIVATIONS)}")
    position = data.get("position_embedding_type", "absolute")
    need("position_embedding_type", position in ("absolute", *_RELATIVE), "use 'absolute', 'relative_key' or 'relative_key_query'")
    need("is_decoder", not data.get("is_decoder", False), "attnkit's BERT is an encoder")
    need("add_cross_attention", not data.get("add_cross_attention", False), "must be false")
    if family == "albert":
        need("num_hidden_groups", data.get("num_hidden_groups", 1) == 1, "only 1 (all layers share weights)")
        need("inner_group_num", data.get("inner_group_num", 1) == 1, "only 1")
    d_model = data.get("hidden_size", 768)
    d_embed = data.get("embedding_size") if family in ("albert", "electra") else None
    if family == "electra" and d_embed == d_model:
        d_embed = None  # ELECTRA projects only when E differs from H
    try:
        return BertConfig(
            vocab_size=data.get("vocab_size", 30522),
            max_positions=data.get("max_position_embeddings", 512),
            type_vocab_size=data.get("type_vocab_size", 2),
            d_model=d_model,
            n_heads=data.get("num_attention_heads", 12),
            n_layers=data.get("num_hidden_layers", 12),
            d_ff=data.get("intermediate_size", 4 * d_model),
            d_embed=d_embed,
            share_layers=family == "albert",
            dropout=data.get("hidden_dropout_prob", 0.1),
            activation=_ACTIVATIONS[act],  # type: ignore[arg-type]
            norm_eps=data.get("layer_norm_eps", 1e-12),
            attention=AttentionConfig(dropout=data.get("attention_probs_dropout_prob", 0.1), position=PositionConfig(
                kind="none" if position == "absolute" else position, max_distance=data.get("max_position_embeddings", 512))),
            positions="after_pad" if family == "roberta" else "absolute",
            pad_id=data.get("pad_token_id", 0) if data.get("pad_token_id") is not None else 0,
            pooler=pooler,
            init_std=data.get("initializer_range", 0.02),
        )
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def hf_labels(data: dict[str, Any], source: str = CONFIG_NAME) -> tuple[str, ...]:
    """The label names of a classifier or tagger, in id order, from ``id2label`` (keys ``"0"`` to ``"N-1"``).

    Raises:
        CheckpointError: ``id2label`` is not a mapping, or its keys are not the integers 0 to N-1.
    """
    id2label = data.get("id2label") or {}
    if not isinstance(id2label, dict):
        raise CheckpointError(f"{source}: id2label={id2label!r} is not a mapping of label ids to names")
    bad = [k for k in id2label if not (isinstance(k, str) and k.strip().lstrip("-").isdigit())]
    if bad:
        raise CheckpointError(f"{source}: id2label key {bad[0]!r} is not an integer label id")
    ids = sorted(int(k) for k in id2label)
    if ids != list(range(len(ids))):
        raise CheckpointError(f"{source}: id2label keys are {ids}; they must be the label ids 0 to {len(ids) - 1}, each once")
    by_id = {int(k): v for k, v in id2label.items()}
    return tuple(str(by_id[i]) for i in ids)


def load_hf_bert(path: str | os.PathLike) -> nn.Module:
    """Build the attnkit model of a Hugging Face BERT-family directory, checking every key and shape."""
    data, cfg_path = read_hf_config(path)
    family = data["model_type"]
    head = head_from_architecture(family, data, str(cfg_path))
    labels = hf_labels(data, str(cfg_path)) if head in ("ForSequenceClassification", "ForTokenClassification") else ()
    state, weights_path = read_hf_weights(path)
    base = "" if head == "Model" else f"{family}."
    if head == "Model" and any(k.startswith(f"{family}.") for k in state):  # a head checkpoint's encoder, loaded bare
        state = {k.removeprefix(f"{family}."): v for k, v in state.items() if k.startswith(f"{family}.")}
    pooler = f"{base}{FAMILIES[family].pooler}.weight" in state
    try:
        encoder = config_from_hf(data, family, pooler=pooler, source=str(cfg_path))
        config: Any = encoder
        if head in ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering"):
            drop = data.get("classifier_dropout_prob" if family == "albert" else "classifier_dropout")
            config = BertTaskConfig(
                encoder=encoder, num_labels=len(labels) or 2, labels=labels, classifier=FAMILIES[family].classifier,
                classifier_dropout=drop,
            )
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    try:  # the shapes on the meta device first: a config that disagrees with the weights allocates nothing
        meta = check_size(HEADS[head], config, prefix=f"{cfg_path}: ")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    for copy, src in _tied_copies(family, head).items():
        stored = state.pop(copy, None)
        if stored is not None and src in state and not torch.equal(stored, state[src]):
            raise CheckpointError(f"{weights_path}: {copy} differs from {src}; untied output layers are not supported")
    kmap = keymap(family, head, pooler, encoder.d_embed is not None, encoder.attention.position.kind != "none")
    own = meta.state_dict()
    tied = set(own) - set(stored_tensors(meta))  # ALBERT's repeated layer, the MLM decoder
    converted = kmap.to_attnkit(state, own, str(weights_path), optional=tied)
    model = HEADS[head](config)
    model.load_state_dict(converted, strict=False)
    return model


def config_to_hf(model: nn.Module, family: str) -> dict[str, Any]:
    """The Hugging Face config dict of an attnkit BERT-family model; raises ConfigError for what the family cannot express."""
    if family not in FAMILIES:
        raise ConfigError(f"family={family!r} is not one of {', '.join(FAMILIES)}")
    head = _HEAD_OF_CLASS.get(type(model))
    if head is None:
        raise ConfigError(f"{type(model).__name__} has no Hugging Face equivalent")
    task = model.config if isinstance(model.config, BertTaskConfig) else None
    c: BertConfig = task.encoder if task else model.config  # type: ignore[assignment]
    f = FAMILIES[family]

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"{what} has no {f.arch} equivalent")

    need(c.attention.kind == "scaled_dot" and not c.attention.params, f"attention.kind={c.attention.kind!r}")
    pos = c.attention.position
    need(pos.kind == "none" or (pos.kind in _RELATIVE and pos.max_distance == c.max_positions),
         f"attention.position kind={pos.kind!r}, max_distance={pos.max_distance}")
    need(c.share_layers == (family == "albert"), f"share_layers={c.share_layers}")
    need((c.positions == "after_pad") == (family == "roberta"), f"positions={c.positions!r}")
    need(family in ("albert", "electra") or c.d_embed is None, f"d_embed={c.d_embed}")
    need(family != "albert" or c.d_embed is not None, "d_embed=None (ALBERT always projects)")
    need(family != "electra" or c.d_embed != c.d_model, f"d_embed={c.d_embed} equal to d_model")
    need(head != "Discriminator" or family == "electra", "ElectraDiscriminator")
    need(head != "ForMaskedLM" or family != "electra", "BertMLM (ELECTRA's generator has another head)")
    need(task is None or task.classifier == f.classifier or head != "ForSequenceClassification", f"classifier={task and task.classifier!r}")
    need(family != "electra" or not c.pooler, "pooler=True")
    out: dict[str, Any] = {
        "model_type": family,
        "architectures": [f"{f.arch}{'ForPreTraining' if head == 'Discriminator' else head}"],
        "vocab_size": c.vocab_size,
        "hidden_size": c.d_model,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "intermediate_size": c.ffn_dim,
        "hidden_act": _TO_HF_ACT[c.activation],
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.attention.dropout,
        "max_position_embeddings": c.max_positions,
        "type_vocab_size": c.type_vocab_size,
        "layer_norm_eps": c.norm_eps,
        "initializer_range": c.init_std,
        "pad_token_id": c.pad_id,
        "position_embedding_type": "absolute" if pos.kind == "none" else pos.kind,
        "tie_word_embeddings": True,
    }
    if family in ("albert", "electra"):
        out["embedding_size"] = c.embed_dim
    if family == "albert":
        out.update(num_hidden_groups=1, inner_group_num=1)
    if task is not None:
        labels = task.labels or tuple(f"LABEL_{i}" for i in range(task.num_labels))
        out["id2label"] = {str(i): name for i, name in enumerate(labels)}
        out["label2id"] = {name: i for i, name in enumerate(labels)}
        out["classifier_dropout_prob" if family == "albert" else "classifier_dropout"] = task.classifier_dropout
    return out


def save_hf_bert(model: nn.Module, path: str | os.PathLike, family: str = "bert", tokenizer: str | os.PathLike | None = None) -> Path:
    """Write ``model`` as a Hugging Face directory that ``transformers.AutoModel``-style classes of ``family`` load."""
    hf_config = config_to_hf(model, family)
    head = _HEAD_OF_CLASS[type(model)]
    encoder = model if isinstance(model, BertModel) else model.bert  # type: ignore[union-attr]
    kmap = keymap(family, head, encoder.pooler is not None, encoder.config.d_embed is not None, encoder.config.attention.position.kind != "none")
    hf_state = {k: v.contiguous() for k, v in kmap.from_attnkit(unique_state_dict(model)).items()}

    def fill(tmp: Path) -> None:
        (tmp / CONFIG_NAME).write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
        save_file(hf_state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        if tokenizer is not None:  # inside the directory before it is renamed into place
            shutil.copyfile(tokenizer, tmp / "tokenizer.json")

    atomic_directory(Path(path), fill)
    return Path(path)
