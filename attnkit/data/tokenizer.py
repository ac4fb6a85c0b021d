"""Tokenizers, built on the Hugging Face ``tokenizers`` library and saved as ``tokenizer.json``.

Every attnkit tokenizer reserves the same special tokens at the same ids, which the
model configs rely on: ``<pad>`` = 0, ``<s>`` (BOS) = 1, ``</s>`` (EOS) = 2, ``<unk>`` = 3.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

from attnkit.errors import CheckpointError, DataError

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
# The largest vocabulary a tokenizer may be asked to learn: the trainers reserve memory in
# proportion to the requested size, and no text attnkit trains on yields more pieces.
MAX_VOCAB = 1_000_000


def check_vocab_size(vocab_size: int, *, what: str = "vocab_size") -> None:
    """Refuse a requested vocabulary above :data:`MAX_VOCAB` before a trainer reserves memory for it.

    Args:
        vocab_size: the requested number of tokens.
        what: the flag or config key to name in the error.

    Raises:
        DataError: ``vocab_size`` is above the limit.
    """
    if vocab_size > MAX_VOCAB:
        raise DataError(f"{what}={vocab_size} is above the limit of {MAX_VOCAB:,} tokens; ask for a smaller vocabulary")


def char_tokenizer(alphabet: str) -> Tokenizer:
    """A character-level tokenizer over ``alphabet`` (one token per character)."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    # "[\s\S]", not ".": the regex "." does not match "\n", which left "\n\n" as one unknown piece.
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return tok


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Load ``tokenizer.json`` from a file or a checkpoint directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; the model directory has no tokenizer (save it with tokenizer=...)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
        raise CheckpointError(f"{path} is not a valid tokenizer.json ({str(e).splitlines()[0]})") from None


def check_against_model(tok: Tokenizer, config: object, source: str) -> None:
    """Raise unless ``tok`` was made for the model of ``config``: the same vocabulary size, and the
    model's ``pad_id``/``bos_id``/``eos_id`` (where its config has them) naming ``<pad>``, ``<s>``, ``</s>``.

    A larger tokenizer produces ids past the embedding table; a smaller one, from another model,
    encodes text into ids that mean other tokens to this model.

    Args:
        tok: the tokenizer.
        config: the model's config (``vocab_size``, or ``src_vocab_size`` and ``tgt_vocab_size``).
        source: where the tokenizer comes from, named in the error.

    Raises:
        CheckpointError: the sizes or the special ids differ.
    """
    n = tok.get_vocab_size()
    for key in ("vocab_size", "src_vocab_size", "tgt_vocab_size"):
        size = getattr(config, key, None)
        if isinstance(size, int) and size != n:
            raise CheckpointError(f"{source}: the tokenizer has {n:,} tokens but the model's {key} is {size:,}; "
                                  "it was made for another model (use the tokenizer.json saved with this model)")
    for key, name in (("pad_id", SPECIALS[PAD_ID]), ("bos_id", SPECIALS[BOS_ID]), ("eos_id", SPECIALS[EOS_ID])):
        i = getattr(config, key, None)
        if isinstance(i, int) and tok.id_to_token(i) != name:
            raise CheckpointError(f"{source}: the model's {key} is {i}, but the tokenizer has {tok.id_to_token(i)!r} there, not "
                                  f"{name!r} (at id {tok.token_to_id(name)}); it was made for another model")


def check_specials(tok: Tokenizer) -> None:
    """Raise unless the tokenizer has attnkit's special tokens at the expected ids."""
    for i, s in enumerate(SPECIALS):
        if tok.token_to_id(s) != i:
            raise CheckpointError(f"tokenizer has {s!r} at id {tok.token_to_id(s)}, expected {i}; it was not made for this model")
