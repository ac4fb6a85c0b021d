"""BERT's WordPiece tokenization (Devlin et al. 2019, section 3, "Input/Output Representations"; Wu et al. 2016).

Built on the Hugging Face ``tokenizers`` library:

* normalisation: control characters removed, whitespace unified, every CJK character
  surrounded by spaces (one token each), and, for an uncased vocabulary, lower-casing
  and accent stripping (NFD, then drop combining marks);
* pre-tokenization: split on whitespace and around every punctuation character;
* WordPiece: greedy longest-match-first sub-words, continuations prefixed ``##``, a
  word with no match (or longer than 100 characters) becomes ``[UNK]``.

Inputs are laid out as ``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` with segment ids 0 for
``[CLS] A [SEP]`` and 1 for ``B [SEP]``. Truncation to ``max_len`` (specials included) follows
one of three strategies for pairs: ``longest_first`` (drop the last token of the longer
sequence, of A on a tie, until it fits), ``only_first``, ``only_second``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import Tensor

from attnkit.data.batching import pad
from attnkit.errors import CheckpointError, ConfigError, DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
Truncation = Literal["longest_first", "only_first", "only_second"]


@dataclass
class BertInputs:
    """A padded batch ready for :class:`attnkit.models.BertModel`."""

    ids: Tensor  # (B, T) token ids, [PAD] after the end
    segment_ids: Tensor  # (B, T) 0 for [CLS] A [SEP], 1 for B [SEP], 0 on padding
    attention_mask: Tensor  # (B, T) 1 real, 0 padding
    word_ids: list[list[int | None]]  # per row and position: index of the word (of A, or of B) it came from; None for specials
    truncated: int  # how many rows lost tokens to truncation

    def word_index(self) -> Tensor:
        """``(B, T)`` word of each position, numbered through A then B; -1 for specials and padding (whole-word masking)."""
        out = torch.full(self.ids.shape, -1, dtype=torch.long)
        for n, words in enumerate(self.word_ids):
            offset, last, prev_seg = 0, -1, 0
            for t, w in enumerate(words):
                seg = int(self.segment_ids[n, t])
                if seg != prev_seg:  # B's words are numbered after A's
                    offset, prev_seg = last + 1, seg
                if w is not None:
                    out[n, t] = last = offset + w
        return out


def read_vocab(path: str | os.PathLike) -> dict[str, int]:
    """``vocab.txt``: one token per line, the id is the line number."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"vocabulary file {path} does not exist")
    vocab: dict[str, int] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n")):
        token = line.rstrip("\r")
        if token or i == 0:
            vocab.setdefault(token, i)
    return vocab


def is_uncased(vocab: dict[str, int]) -> bool:
    """True when no ordinary token has an upper-case letter (bracketed specials aside)."""
    return not any(t != t.lower() for t in vocab if not (t.startswith("[") and t.endswith("]")))


def bert_pipeline(model: models.Model, lowercase: bool, strip_accents: bool | None = None) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` with BERT's normaliser and pre-tokenizer around ``model``."""
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase if strip_accents is None else strip_accents, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


class WordPieceTokenizer:
    """BERT tokenization: text (or text pairs) -> padded ids, segment ids and attention mask.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` whose vocabulary has [PAD], [UNK], [CLS], [SEP]
            (and [MASK] for masked-LM); its own post-processor, padding and truncation
            settings are not used.
        max_len: the longest sequence, specials included (the model's position limit).
    """

    def __init__(self, tokenizer: Tokenizer, max_len: int = 512) -> None:
        self.tokenizer = tokenizer
        self.max_len = max_len
        tokenizer.no_padding()  # a tokenizer.json may carry its own padding and truncation; ours apply
        tokenizer.no_truncation()
        missing = [s for s in SPECIAL_TOKENS[:4] if tokenizer.token_to_id(s) is None]
        if missing:
            raise CheckpointError(f"the vocabulary has no {', '.join(missing)}; it is not a BERT WordPiece vocabulary")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (tokenizer.token_to_id(s) for s in SPECIAL_TOKENS[:4])
        self.mask_id = tokenizer.token_to_id("[MASK]")

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_vocab(cls, path: str | os.PathLike, *, lowercase: bool | None = None, max_len: int = 512) -> "WordPieceTokenizer":
        """From a ``vocab.txt``; ``lowercase=None`` lower-cases (and strips accents) when the vocabulary is uncased."""
        vocab = read_vocab(path)
        if "[UNK]" not in vocab:
            raise CheckpointError(f"{path} has no [UNK] token; it is not a BERT WordPiece vocabulary")
        lower = is_uncased(vocab) if lowercase is None else lowercase
        return cls(bert_pipeline(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100), lower), max_len)

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, max_len: int = 512) -> "WordPieceTokenizer":
        """From ``tokenizer.json`` or ``vocab.txt``, or a directory holding one (``tokenizer.json`` preferred)."""
        path = Path(path)
        if path.is_dir():
            found = [p for p in (path / "tokenizer.json", path / "vocab.txt") if p.is_file()]
            if not found:
                raise CheckpointError(f"{path} has neither tokenizer.json nor vocab.txt")
            path = found[0]
        if path.suffix == ".txt":
            return cls.from_vocab(path, max_len=max_len)
        if not path.is_file():
            raise CheckpointError(f"tokenizer file {path} does not exist")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON
            raise CheckpointError(f"{path} is not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
        return cls(tok, max_len)

    @classmethod
    def train(cls, files: Sequence[str | os.PathLike], vocab_size: int, *, lowercase: bool = True, max_len: int = 512) -> "WordPieceTokenizer":
        """Learn a WordPiece vocabulary of ``vocab_size`` tokens (specials first, ids 0-4) from text files."""
        if not files:
            raise DataError("no training text files given")
        for f in files:
            if not Path(f).is_file():
                raise DataError(f"training text {f} does not exist")
        if vocab_size <= len(SPECIAL_TOKENS):
            raise ConfigError(f"vocab_size={vocab_size} is too small; it must exceed the {len(SPECIAL_TOKENS)} special tokens")
        if all(not Path(f).read_text(encoding="utf-8", errors="replace").strip() for f in files):
            raise DataError("no text to train the tokenizer on: every training file is empty")
        tok = bert_pipeline(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100), lowercase)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), continuing_subword_prefix="##", show_progress=False
        )
        tok.train([str(f) for f in files], trainer)
        return cls(tok, max_len)

    def save(self, path: str | os.PathLike) -> None:
        """Write ``tokenizer.json``."""
        self.tokenizer.save(str(path))

    @property
    def special_ids(self) -> list[int]:
        """Ids of the special tokens present ([PAD], [UNK], [CLS], [SEP], [MASK])."""
        return [i for i in (self.tokenizer.token_to_id(s) for s in SPECIAL_TOKENS) if i is not None]

    def maskable(self, inputs: BertInputs) -> Tensor:
        """``(B, T)`` True at real, non-special tokens: the ones masked-LM may choose."""
        return inputs.attention_mask.bool() & ~torch.isin(inputs.ids, torch.tensor(self.special_ids))

    def random_ids(self) -> Tensor:
        """Every non-special id: what masked-LM's random replacements are drawn from."""
        special = set(self.special_ids)
        return torch.tensor([i for i in range(self.vocab_size) if i not in special])

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def check_model(self, vocab_size: int) -> None:
        """Raise unless every id of this tokenizer is below the model's ``vocab_size``."""
        if self.vocab_size > vocab_size:
            raise ConfigError(
                f"the tokenizer has {self.vocab_size} tokens but the model's vocab_size is {vocab_size}; they were not made for each other"
            )

    # -- encoding ---------------------------------------------------------------------
    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text``, without specials."""
        return self.tokenizer.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def __call__(
        self,
        texts: Sequence[str] | Sequence[Sequence[str]],
        pairs: Sequence[str] | Sequence[Sequence[str]] | None = None,
        *,
        max_len: int | None = None,
        truncation: Truncation = "longest_first",
        is_pretokenized: bool = False,
    ) -> BertInputs:
        """Encode a batch of texts (or of text pairs) into padded tensors.

        Args:
            texts: sentences A; with ``is_pretokenized`` each is a list of words.
            pairs: sentences B, one per A, or None.
            max_len: at most this many tokens per row, specials included (default ``self.max_len``).
            truncation: which sequence of a pair loses tokens when the row is too long.
        """
        limit = self.max_len if max_len is None else max_len
        if pairs is not None and len(pairs) != len(texts):
            raise DataError(f"{len(texts)} first sentences but {len(pairs)} second sentences; they must pair up")
        specials = 3 if pairs is not None else 2
        if limit < specials + (2 if pairs is not None else 1):
            raise ConfigError(f"max_len={limit} is too short for {specials} special tokens and the text")
        enc_a = self.tokenizer.encode_batch(list(texts), add_special_tokens=False, is_pretokenized=is_pretokenized)
        enc_b = self.tokenizer.encode_batch(list(pairs), add_special_tokens=False, is_pretokenized=is_pretokenized) if pairs is not None else None
        rows, segs, words, truncated = [], [], [], 0
        for n, a in enumerate(enc_a):
            ids_a, w_a = a.ids, a.word_ids
            ids_b, w_b = (enc_b[n].ids, enc_b[n].word_ids) if enc_b is not None else ([], [])
            keep_a, keep_b = truncate(len(ids_a), len(ids_b), limit - specials, truncation if enc_b is not None else "only_first")
            truncated += (keep_a, keep_b) != (len(ids_a), len(ids_b))
            row = [self.cls_id, *ids_a[:keep_a], self.sep_id]
            word = [None, *w_a[:keep_a], None]
            seg = [0] * len(row)
            if enc_b is not None:
                row += [*ids_b[:keep_b], self.sep_id]
                word += [*w_b[:keep_b], None]
                seg += [1] * (keep_b + 1)
            rows.append(row)
            segs.append(seg)
            words.append(word)
        ids, mask = pad(rows, self.pad_id, return_mask=True)  # (B, T)
        segment_ids = pad(segs, 0)  # (B, T)
        return BertInputs(ids=ids, segment_ids=segment_ids, attention_mask=mask.long(), word_ids=words, truncated=truncated)


def truncate(n_a: int, n_b: int, budget: int, strategy: Truncation) -> tuple[int, int]:
    """How many tokens of A and B to keep so that ``keep_a + keep_b <= budget``.

    ``longest_first`` removes one token at a time from the longer sequence (from A on a
    tie); ``only_first`` / ``only_second`` remove from A / B only, and raise if that would
    leave it empty.
    """
    excess = n_a + n_b - budget
    if excess <= 0:
        return n_a, n_b
    if strategy == "longest_first":
        # The result of removing one token at a time from the longer sequence: the shorter one
        # keeps at most half the budget (rounded down), the longer one the rest.
        a_longer = n_a > n_b
        short, long_ = (n_b, n_a) if a_longer else (n_a, n_b)
        short = min(short, max(budget - long_, budget // 2))
        long_ = min(long_, budget - short)
        return (long_, short) if a_longer else (short, long_)
    if strategy == "only_first":
        if excess >= n_a:
            raise DataError(f"cannot fit {n_a} + {n_b} tokens into {budget} by truncating only the first sequence")
        return n_a - excess, n_b
    if strategy == "only_second":
        if excess >= n_b:
            raise DataError(f"cannot fit {n_a} + {n_b} tokens into {budget} by truncating only the second sequence")
        return n_a, n_b - excess
    raise ConfigError(f"truncation={strategy!r} is not one of 'longest_first', 'only_first', 'only_second'")
