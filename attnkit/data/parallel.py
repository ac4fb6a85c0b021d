"""Parallel corpora: aligned sentence files, and length-bucketed token-count batches.

A corpus directory holds one file per split and language, aligned line by line, plain or
gzipped: ``DIR/train.de(.gz)`` and ``DIR/train.en(.gz)`` hold the German and English sides of
the training split (the Multi30k layout). Line ``i`` of one side translates line ``i`` of
the other.

Batches follow Vaswani et al. 2017, section 5.1: "sentence pairs were batched together by
approximate sequence length. Each training batch contained a set of sentence pairs
containing approximately 25000 source tokens and 25000 target tokens." Here a batch holds
at most ``max_tokens`` padded tokens on either side (``rows * longest``), so the budget also
bounds the memory a step needs.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from attnkit.data.batching import token_budget_batches
from attnkit.data.seq2seq import Seq2SeqBatch, collate
from attnkit.errors import DataError

SUFFIXES = ("", ".gz")


@dataclass
class ParallelCorpus:
    """Aligned source and target sentences of one split."""

    src: list[str]
    tgt: list[str]
    src_lang: str
    tgt_lang: str
    split: str

    def __len__(self) -> int:
        return len(self.src)


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file, plain or gzipped (by its ``.gz`` suffix), without newlines.

    Raises:
        DataError: the file is missing, not valid gzip or not UTF-8.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", newline="\n") as f:
                text = f.read()
        else:
            text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte offset {e.start}); convert it, e.g. with iconv -t UTF-8") from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} cannot be read as gzip ({e}); is it truncated, or plain text named .gz?") from None
    # Only "\n" ends a line: str.splitlines would also split at U+2028, U+0085, form feeds...,
    # which can occur inside a sentence and would shift one side against the other.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start a new one
    return [line.rstrip("\r") for line in lines]


def languages(data_dir: str | os.PathLike, split: str) -> list[str]:
    """The languages that have a file for ``split`` in ``data_dir`` (``train.de.gz`` -> ``de``)."""
    found = set()
    for p in Path(data_dir).glob(f"{split}.*"):
        name = p.name[: -len(".gz")] if p.name.endswith(".gz") else p.name
        lang = name[len(split) + 1 :]
        if lang and "." not in lang:
            found.add(lang)
    return sorted(found)


def split_file(data_dir: str | os.PathLike, split: str, lang: str) -> Path:
    """The file of one split and language, ``DIR/split.lang`` or ``DIR/split.lang.gz``.

    Raises:
        DataError: ``data_dir`` is missing, or it has no such file (the message lists what it has).
    """
    root = Path(data_dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise DataError(f"data directory {root} {what}; pass --data DIR with files like train.de.gz and train.en.gz")
    candidates = [root / f"{split}.{lang}{s}" for s in SUFFIXES]
    for c in candidates:
        if c.is_file():
            return c
    have = languages(root, split)
    if have:
        raise DataError(
            f"{root} has no {split}.{lang} or {split}.{lang}.gz: the {split!r} split exists for "
            f"{', '.join(have)} only; choose languages among those"
        )
    splits = sorted({p.name.split(".", 1)[0] for p in root.iterdir() if p.is_file() and "." in p.name})
    raise DataError(
        f"{root} has no {split}.{lang} or {split}.{lang}.gz (no {split!r} split); splits found: {', '.join(splits) or 'none'}"
    )


def read_parallel(data_dir: str | os.PathLike, split: str, src_lang: str, tgt_lang: str, *, limit: int | None = None) -> ParallelCorpus:
    """Read the aligned ``split.src_lang`` / ``split.tgt_lang`` files of ``data_dir``.

    Args:
        data_dir: the corpus directory.
        split: ``train``, ``val``, ``test_2016_flickr``, ...
        src_lang, tgt_lang: language codes, the files' last suffix (``de``, ``en``).
        limit: keep only the first ``limit`` pairs.

    Raises:
        DataError: same source and target language, missing directory or files, an empty
            file, or sides with different numbers of lines (the message names the files).
    """
    if src_lang == tgt_lang:
        raise DataError(f"source and target language are both {src_lang!r}; pass two different languages (e.g. --src de --tgt en)")
    src_path, tgt_path = split_file(data_dir, split, src_lang), split_file(data_dir, split, tgt_lang)
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    for path, lines in ((src_path, src), (tgt_path, tgt)):
        if not any(line.strip() for line in lines):
            raise DataError(f"{path} is empty; a parallel corpus needs one sentence per line")
    if len(src) != len(tgt):
        raise DataError(
            f"{src_path} has {len(src):,} lines but {tgt_path} has {len(tgt):,}; the two sides must be aligned line by line"
        )
    if limit is not None:
        src, tgt = src[:limit], tgt[:limit]
    return ParallelCorpus(src, tgt, src_lang, tgt_lang, split)


class TokenBatches:
    """Tokenized sentence pairs served in batches of about ``max_tokens`` tokens.

    Each epoch the pairs are sorted by length (ties broken at random), cut into batches of
    up to ``max_tokens`` padded tokens per side, and the batches are shuffled; both random
    draws come from a generator seeded with ``(seed, epoch)`` only, so a resumed run sees
    exactly the batches an uninterrupted one would. Every pair appears once per epoch; a
    pair longer than the budget on its own forms a batch by itself.

    Args:
        pairs: ``(source ids, target ids)`` without BOS/EOS.
        max_tokens: the most padded tokens per batch on each side, counting the target's
            BOS (decoder input) or EOS (decoder output).
        name: what the data is, for error messages.
    """

    def __init__(self, pairs: Sequence[tuple[list[int], list[int]]], max_tokens: int, name: str = "dataset") -> None:
        if not pairs:
            raise DataError(f"{name} is empty: it needs at least one sentence pair")
        if max_tokens < 1:
            raise DataError(f"max_tokens={max_tokens} must be at least 1")
        self.pairs = list(pairs)
        self.max_tokens = max_tokens
        self.src_len = torch.tensor([len(s) for s, _ in self.pairs])  # (N,)
        self.tgt_len = torch.tensor([len(t) + 1 for _, t in self.pairs])  # (N,) with BOS/EOS
        self.length = torch.maximum(self.src_len, self.tgt_len)  # (N,)

    def __len__(self) -> int:
        return len(self.pairs)

    def plan(self, *, epoch: int = 0, seed: int = 0, shuffle: bool = True) -> list[list[int]]:
        """The batches of one epoch as lists of pair indices (:func:`~attnkit.data.batching.token_budget_batches`).

        Without ``shuffle`` the pairs are taken by length (stable order) and the batches in
        that order: the deterministic layout used for validation.
        """
        rng = torch.Generator().manual_seed(seed * 1_000_003 + epoch) if shuffle else None
        return token_budget_batches(self.length, self.max_tokens, rng=rng)

    def batches(self, *, epoch: int = 0, seed: int = 0, shuffle: bool = True) -> Iterator[Seq2SeqBatch]:
        """The collated batches of :meth:`plan`."""
        for idx in self.plan(epoch=epoch, seed=seed, shuffle=shuffle):
            yield collate([self.pairs[i] for i in idx])
