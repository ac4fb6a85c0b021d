"""Joint subword tokenizers for translation, trained with the ``tokenizers`` library.

Vaswani et al. 2017, section 5.1: "Sentences were encoded using byte-pair encoding, which
has a shared source-target vocabulary". One tokenizer is learned on the source and target
sides of the training split together, so the model can share its embeddings (section 3.4).
Two algorithms are offered: BPE (Sennrich et al. 2016) and the unigram language model
(Kudo 2018).

Whitespace is kept in the tokens (SentencePiece's Metaspace scheme: a space becomes ``▁``
glued to the next word; punctuation is split off but carries no ``▁``), so decoding restores the text exactly, punctuation spacing
included; no language-specific detokenizer is needed. Text is NFKC-normalised first.
Printable ASCII is always in the vocabulary; other characters never seen in training
become ``<unk>``, which decoding drops.

Special tokens sit at attnkit's fixed ids: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3.
"""

from __future__ import annotations

from typing import Iterable, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from attnkit.data.tokenizer import SPECIALS, UNK_ID, check_specials, check_vocab_size
from attnkit.errors import DataError

SubwordKind = Literal["bpe", "unigram"]
MIN_VOCAB = 128
# Printable ASCII is always in the vocabulary, seen in training or not, so that brackets,
# quotes or digits a small corpus happens to lack still survive a round trip.
ALPHABET = [chr(c) for c in range(33, 127)]


def train_subword_tokenizer(texts: Iterable[str], vocab_size: int, kind: SubwordKind = "bpe", *, what: str = "vocab_size") -> Tokenizer:
    """Learn a subword vocabulary of ``vocab_size`` entries (specials included) from ``texts``.

    Args:
        texts: training sentences; for a joint vocabulary, both sides of the corpus.
        vocab_size: the vocabulary size, special tokens included. The result may be smaller
            when the text has fewer distinct pieces.
        kind: ``"bpe"`` or ``"unigram"``.
        what: the flag or config key that set ``vocab_size``, named in errors.

    Returns:
        A ``tokenizers.Tokenizer``; ``encode(text).ids`` has no BOS/EOS, ``decode(ids)``
        returns normal text.

    Raises:
        DataError: an unknown ``kind``, ``vocab_size`` below 128 or above 1,000,000, or no text to learn from.
    """
    if kind not in ("bpe", "unigram"):
        raise DataError(f"tokenizer kind {kind!r} is not known; choose bpe or unigram")
    if vocab_size < MIN_VOCAB:
        raise DataError(f"{what}={vocab_size} is too small for a subword tokenizer; use at least {MIN_VOCAB}")
    check_vocab_size(vocab_size, what=what)
    sentences = [t for t in texts if t.strip()]
    if not sentences:
        raise DataError("no text to train the tokenizer on: every training sentence is empty")
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=SPECIALS[UNK_ID]))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), initial_alphabet=ALPHABET, show_progress=False
        )
    else:
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), unk_token=SPECIALS[UNK_ID], initial_alphabet=ALPHABET,
            show_progress=False,
        )
    tok.normalizer = normalizers.NFKC()
    # Words at spaces (the space kept as "▁"), then punctuation split off, so that "Fahrrad."
    # shares "▁Fahrrad" with "Fahrrad,"; pieces without "▁" glue to the previous one on decoding.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"), pre_tokenizers.Punctuation("isolated")]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.train_from_iterator(sentences, trainer=trainer)
    check_specials(tok)
    return tok


def encode_lines(tok: Tokenizer, lines: list[str]) -> list[list[int]]:
    """Token ids of each line (batched through the Rust tokenizer)."""
    return [e.ids for e in tok.encode_batch(lines)]
