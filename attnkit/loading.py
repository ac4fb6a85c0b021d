"""Loading a saved model from a directory, whatever wrote it.

:func:`load` (exposed as ``attnkit.load``) recognises these kinds of directory:

* a Hugging Face GPT-2 directory (``config.json`` with ``"model_type": "gpt2"``), converted by
  the key maps of ``attnkit.hub.gpt2``;
* a Hugging Face BERT, RoBERTa, ALBERT or ELECTRA directory, converted by ``attnkit.hub.bert``;
* a Hugging Face Llama, Mistral or Qwen2 directory, converted by ``attnkit.hub.llama``;
* a Hugging Face T5 directory (``T5ForConditionalGeneration``), converted by ``attnkit.hub.t5``;
* a Hugging Face BART directory (``BartForConditionalGeneration``), converted by ``attnkit.hub.bart``;
* a Hugging Face Marian directory (``MarianMTModel``), converted by ``attnkit.hub.marian``;
* a Hugging Face Pegasus directory (``PegasusForConditionalGeneration``), converted by ``attnkit.hub.pegasus``;
* a Hugging Face XLNet directory (LM head, sequence or token classification), converted by ``attnkit.hub.xlnet``;
* an attnkit directory (``config.json`` + ``model.safetensors``), rebuilt by
  ``attnkit.models.base.load``.

This module sits above both ``attnkit.models`` and ``attnkit.hub``: models never import the
hub, the hub imports models, and the detection that needs both lives here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attnkit.hub.bart import is_hf_bart, load_hf_bart
from attnkit.hub.bert import is_hf_bert, load_hf_bert
from attnkit.hub.gpt2 import is_hf_gpt2, load_hf_gpt2
from attnkit.hub.llama import is_hf_llama, load_hf_llama
from attnkit.hub.marian import is_hf_marian, load_hf_marian
from attnkit.hub.pegasus import is_hf_pegasus, load_hf_pegasus
from attnkit.hub.t5 import is_hf_t5, load_hf_t5
from attnkit.hub.xlnet import is_hf_xlnet, load_hf_xlnet
from attnkit.errors import CheckpointError, ConfigError
from attnkit.models.base import check_fits
from attnkit.models.base import load as load_native


def load(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model saved in directory ``path``, checking every key and shape.

    Args:
        path: an attnkit checkpoint directory or one of the Hugging Face directories listed above.
        map_location: device to place the model on.

    Returns:
        The model (a :class:`~attnkit.models.base.PretrainedModel`).

    Raises:
        CheckpointError: missing, corrupt or mismatching files.
    """
    path = Path(path)
    if (path / "adapter_config.json").is_file():  # an adapter (attnkit.peft): its base, with the adapter applied
        from attnkit.peft.files import load_adapted

        return load_adapted(path, map_location=map_location)
    for is_hf, load_hf in ((is_hf_gpt2, load_hf_gpt2), (is_hf_bert, load_hf_bert), (is_hf_llama, load_hf_llama),
                            (is_hf_t5, load_hf_t5), (is_hf_bart, load_hf_bart), (is_hf_marian, load_hf_marian),
                            (is_hf_pegasus, load_hf_pegasus), (is_hf_xlnet, load_hf_xlnet)):
        if is_hf(path):  # GPT-2; BERT, RoBERTa, ALBERT, ELECTRA; Llama, Mistral, Qwen2 (built and checked on the CPU)
            model = load_hf(path)
            try:
                check_fits(model, map_location, f"{path}: the model", fix="load it where more memory is free (another --device)")
            except ConfigError as e:
                raise CheckpointError(str(e)) from None
            return model.to(map_location)
    return load_native(path, map_location=map_location)  # checks the CPU and map_location before building


def load_model_and_tokenizer(model_dir: str | os.PathLike, tokenizer_path: str | os.PathLike | None = None, *,
                             map_location: str | torch.device = "cpu") -> tuple[nn.Module, Any]:
    """A BERT-family or XLNet model and its WordPiece tokenizer, checked against each other.

    Args:
        model_dir: an attnkit or Hugging Face BERT-family or XLNet directory (encoder or encoder + head).
        tokenizer_path: ``tokenizer.json`` or ``vocab.txt``; default: the one in ``model_dir``.
        map_location: device to place the model on (its free memory is checked first).

    Returns:
        ``(model, tokenizer)``; the tokenizer's vocabulary fits the encoder's embedding table, its
        [PAD] is the encoder's ``pad_id``, and its length limit is the encoder's position limit.

    Raises:
        CheckpointError: the directory holds no BERT-family or XLNet model, or the vocabularies differ.
    """
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.training.finetune import backbone_of

    model = load(model_dir, map_location=map_location)
    enc = backbone_of(model)
    tok = WordPieceTokenizer.from_file(tokenizer_path or model_dir, max_len=enc.config.max_len)
    tok.check_model(enc.config.vocab_size)
    if tok.pad_id != enc.config.pad_id:  # padding would be read as a word (and RoBERTa's positions shifted)
        raise CheckpointError(f"the tokenizer's [PAD] is id {tok.pad_id} but the model's pad_id is {enc.config.pad_id} "
                              f"({tokenizer_path or model_dir}); they were not made for each other")
    return model, tok


__all__ = ["load", "load_model_and_tokenizer"]
