"""Hugging Face / peft names of an attnkit model's layers, from the hub key maps.

A model imported from Hugging Face (BERT family through :mod:`attnkit.hub.bert`, GPT-2 through
:mod:`attnkit.hub.gpt2`) keeps the key maps that named its weights. A layer's Hugging Face name
is its weight key translated back (``bert.layers.0.ffn.w1.weight`` ->
``bert.encoder.layer.0.intermediate.dense.weight``); a slice of the fused Q/K/V projection is the
separate ``query``/``key``/``value`` layer the :class:`~attnkit.hub.keymap.Fuse` rule joined.
GPT-2's ``c_attn`` is itself fused, so only the whole ``qkv_proj`` has a name there (slices are
written as one exactly equivalent adapter of the whole layer, :func:`attnkit.peft.peft_format.fuse_slices`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from torch import nn

from attnkit.errors import CheckpointError
from attnkit.hub.keymap import _compile, peek_config

TASK_TYPES = {"BertClassifier": "SEQ_CLS", "BertTagger": "TOKEN_CLS", "BertQA": "QUESTION_ANS", "GPT": "CAUSAL_LM",
              "BertModel": "FEATURE_EXTRACTION", "BertMLM": "FEATURE_EXTRACTION"}


def hf_kind(base: str | os.PathLike | None) -> str | None:
    """``"gpt2"`` or the BERT family name when ``base`` is a Hugging Face directory, else None."""
    if base is None:
        return None
    data = peek_config(Path(base))
    if data is None or "d_model" in data or "model_type" not in data:
        return None
    kind = data["model_type"]
    return kind if kind in ("gpt2", "bert", "roberta", "albert", "electra") else None


def hf_namer(model: nn.Module, kind: str) -> Callable[[str, str], str]:
    """``name(layer, part)``: the Hugging Face module name of attnkit linear ``layer`` (or its slice ``part``).

    Raises:
        CheckpointError: a layer with no Hugging Face counterpart (named in the message).
    """
    if kind == "gpt2":
        from attnkit.hub.gpt2 import GPT2_KEYS

        def gpt2(layer: str, part: str) -> str:
            hit = GPT2_KEYS._translate(f"{layer}.weight", forward=False)
            if hit is None or part != "all":
                what = f"the {part} slice of {layer}" if part != "all" else layer
                raise CheckpointError(f"{what} has no GPT-2 layer of its own (c_attn fuses q, k and v); adapt qkv_proj whole "
                                      "for a peft adapter")
            return "transformer." + hit[0].removesuffix(".weight")

        return gpt2
    from attnkit.hub.bert import _HEAD_OF_CLASS, keymap

    head = _HEAD_OF_CLASS.get(type(model))
    if head is None:
        raise CheckpointError(f"{type(model).__name__} has no Hugging Face {kind} counterpart")
    enc = model if head == "Model" else model.bert  # type: ignore[union-attr]
    kmap = keymap(kind, head, enc.pooler is not None, enc.config.d_embed is not None)

    def bert(layer: str, part: str) -> str:
        key = f"{layer}.weight"
        if part == "all":
            hit = kmap._translate(key, forward=False)
            if hit is None:
                raise CheckpointError(f"{layer} has no Hugging Face {kind} counterpart")
            return hit[0].removesuffix(".weight")
        for fuse in kmap.fused:
            m = _compile(fuse.target).match(key)
            if m:
                src = fuse.sources["qkv".index(part)]
                i = m.groupdict().get("i")
                return (src.replace("{i}", i) if i is not None else src).removesuffix(".weight")
        raise CheckpointError(f"the {part} slice of {layer} has no Hugging Face {kind} counterpart")

    return bert


__all__ = ["TASK_TYPES", "hf_kind", "hf_namer"]
