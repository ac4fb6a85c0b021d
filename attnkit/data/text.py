"""Plain text for language modelling: reading, tokenizers trained on it, train/validation split.

Two tokenizers, both saved as ``tokenizer.json`` with attnkit's special tokens at ids 0-3:

* character level (:func:`attnkit.data.tokenizer.char_tokenizer`): one token per distinct
  character of the text; characters it has not seen are an error at encoding time;
* byte-level BPE (Radford et al. 2019, section 2.2) trained with the ``tokenizers``
  library on the text: every byte string is representable, so nothing is unknown.

The split follows nanoGPT: the first 90% of the tokens train, the last 10% validate.
"""

from __future__ import annotations

import os
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor

from attnkit.data.tokenizer import SPECIALS, char_tokenizer, check_vocab_size
from attnkit.errors import DataError
from attnkit.io import read_utf8

TokenizerKind = Literal["char", "bpe"]


def read_text_file(path: str | os.PathLike) -> str:
    """The UTF-8 text of ``path``, gunzipped where its name ends in ``.gz``.

    Raises:
        DataError: the file is missing, not valid gzip or not UTF-8.
    """
    if str(path).endswith(".gz"):
        from attnkit.data.parallel import read_lines

        return "".join(line + "\n" for line in read_lines(path))
    return read_utf8(path)


def read_text(path: str | os.PathLike) -> str:
    """The text of ``path`` (:func:`read_text_file`); missing, empty or non-UTF-8 files raise :class:`DataError`."""
    text = read_text_file(path)
    if not text.strip():
        raise DataError(f"{path} is empty; language-model training needs text")
    return text


def train_bpe(text: str, vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer with ``vocab_size`` entries (specials included) learned from ``text``."""
    if vocab_size < len(SPECIALS) + 256:
        raise DataError(f"vocab_size={vocab_size} is too small for byte-level BPE; it needs at least {len(SPECIALS) + 256} (specials + 256 bytes)")
    check_vocab_size(vocab_size, what="data.vocab_size")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = text.splitlines(keepends=True)
    tok.train_from_iterator((("".join(lines[i : i + 1000])) for i in range(0, len(lines), 1000)), trainer=trainer)
    return tok


def text_tokenizer(text: str, kind: TokenizerKind = "char", vocab_size: int = 4096) -> Tokenizer:
    """A character-level tokenizer over the characters of ``text``, or byte-level BPE trained on it."""
    if kind == "char":
        return char_tokenizer("".join(sorted(set(text))))
    if kind == "bpe":
        return train_bpe(text, vocab_size)
    raise DataError(f"tokenizer={kind!r} is not one of 'char', 'bpe'")


def is_char_level(tok: Tokenizer) -> bool:
    return isinstance(tok.model, models.WordLevel)


def encode(tok: Tokenizer, text: str, *, what: str = "text", unknown: Literal["error", "unk"] = "error") -> list[int]:
    """Token ids of ``text``.

    Characters outside a character-level vocabulary raise :class:`DataError` naming them, or with
    ``unknown="unk"`` become ``<unk>`` (the id every attnkit tokenizer reserves for it).
    """
    if is_char_level(tok):
        vocab = tok.get_vocab()
        unseen = sorted({ch for ch in text if ch not in vocab})
        if unseen and unknown != "unk":
            shown = ", ".join(repr(ch) for ch in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
            raise DataError(f"the {what} has {len(unseen)} character(s) outside the model's vocabulary: {shown}; remove them, "
                            "or map them to <unk> with --set data.unknown=unk")
        unk = vocab.get(SPECIALS[3], 3)
        return [vocab.get(ch, unk) for ch in text]
    return tok.encode(text).ids


def split_tokens(ids: list[int], context: int, train_fraction: float = 0.9) -> tuple[Tensor, Tensor]:
    """First ``train_fraction`` of the tokens for training, the rest for validation, as int64 tensors.

    Raises:
        DataError: either part is too short to hold one window of ``context + 1`` tokens.
    """
    n = int(train_fraction * len(ids))
    data = torch.tensor(ids, dtype=torch.long)
    train, valid = data[:n], data[n:]
    need = context + 1
    if len(valid) < need:
        raise DataError(
            f"the text has {len(ids)} tokens; its validation part ({len(valid)}) is shorter than one window of "
            f"context+1={need} tokens; use a longer text (at least {int(need / (1 - train_fraction)) + 1} tokens) or a smaller context (--set model.context=N)"
        )
    return train, valid
