"""CoNLL-style token-tag files (CoNLL-2003 layout as used by WNUT-17, Derczynski et al. 2017).

One token per line, ``token<TAB>tag`` (or whitespace-separated; with more than two columns the
first is the token and the last the tag, as in CoNLL-2003), and a blank line between sentences.
A line holding only whitespace (WNUT-17's training file has ``"\\t"`` lines) is a blank line;
``-DOCSTART-`` lines are skipped. Tags must be ``O`` or ``B|I|E|S-TYPE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from attnkit.errors import DataError
from attnkit.io import utf8_lines
from attnkit.metrics import split_tag


@dataclass
class TaggedSentences:
    """Tokenized sentences with one tag per token (``tags`` is None for untagged input)."""

    tokens: list[list[str]]
    tags: list[list[str]] | None
    source: str = ""

    def __len__(self) -> int:
        return len(self.tokens)

    def tag_names(self) -> tuple[str, ...]:
        """``O`` first, then the other tags sorted by entity type and B before I (E, S)."""
        seen = {t for sent in self.tags or () for t in sent}
        rest = sorted(seen - {"O"}, key=lambda t: (split_tag(t)[1], "BIES".index(split_tag(t)[0])))
        return ("O", *rest)


def read_conll(path: str | os.PathLike, *, limit: int | None = None) -> TaggedSentences:
    """Read a CoNLL file of ``token<TAB>tag`` lines with blank lines between sentences.

    Args:
        path: the file.
        limit: read at most this many sentences.

    Raises:
        DataError: naming ``file:line`` for a line without exactly a token and a tag, or a bad tag.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    tokens: list[list[str]] = []
    tags: list[list[str]] = []
    cur_tok: list[str] = []
    cur_tag: list[str] = []
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(utf8_lines(f, path), start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                if cur_tok:
                    tokens.append(cur_tok)
                    tags.append(cur_tag)
                    cur_tok, cur_tag = [], []
                    if limit is not None and len(tokens) >= limit:
                        break
                continue
            fields = line.split("\t") if "\t" in line else line.split()
            fields = [x.strip() for x in fields]
            if fields[0].startswith("-DOCSTART-"):
                continue
            if len(fields) < 2 or not fields[0] or not fields[-1]:
                raise DataError(f"{path}:{n}: expected 'token<TAB>tag', got {line!r}")
            try:
                split_tag(fields[-1])
            except DataError as e:
                raise DataError(f"{path}:{n}: {e}") from None
            cur_tok.append(fields[0])
            cur_tag.append(fields[-1])
    if cur_tok and (limit is None or len(tokens) < limit):
        tokens.append(cur_tok)
        tags.append(cur_tag)
    if not tokens:
        raise DataError(f"{path} holds no sentences")
    return TaggedSentences(tokens, tags, str(path))


def check_tags(train_tags: Sequence[str], data: TaggedSentences) -> None:
    """Raise if ``data`` has tags that ``train_tags`` lacks, listing them."""
    unseen = sorted({t for sent in data.tags or () for t in sent} - set(train_tags))
    if unseen:
        raise DataError(
            f"{data.source} has tags the training data never had: {', '.join(map(repr, unseen))} "
            f"(training tags: {', '.join(map(repr, train_tags))})"
        )


def write_conll(tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]]) -> str:
    """The CoNLL text of tagged sentences: ``token<TAB>tag`` lines, a blank line after each sentence."""
    return "".join("".join(f"{w}\t{t}\n" for w, t in zip(ws, ts)) + "\n" for ws, ts in zip(tokens, tags))
