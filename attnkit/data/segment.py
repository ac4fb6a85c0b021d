"""Words for whole-word masking in text written without spaces: Chinese whole-word masking (Cui et al. 2019).

BERT's tokenizer splits Chinese into single characters, each its own "word", so whole-word masking
would mask characters one at a time. Chinese BERT-wwm ("Pre-Training with Whole Word Masking for
Chinese BERT", Cui et al. 2019, section 3.1) masks whole words instead, the words found by a word
segmenter: every character of a chosen word is masked. Here a token begins a word when its first
character begins one of the segmenter's words; the tokens are the tokenizer's, unchanged.

Segmenters (``data.segmenter``):

* ``jieba``: the ``jieba`` package's default mode (``pip install jieba``);
* ``spaces``: the text is already segmented, its words separated by white space (a pre-segmented
  corpus), so a word begins after white space.

Phrase- and entity-level masking (ERNIE, Sun et al. 2019, section 3.2) masks whole phrases and named
entities, each one unit of several words. ERNIE finds them with lexical analysis, chunking and entity
recognition; here they come from a lexicon (:class:`PhraseLexicon`): a file of one phrase or entity a
line, the text's own collocations (:mod:`attnkit.data.phrases`) or a tagger's entities
(:mod:`attnkit.runs.lexicon`). Each occurrence in the text, longest first, becomes one
unit, so whole-word masking (and span masking) takes it, every token of it, or none. ERNIE's stages
(basic, then phrase, then entity masking) are runs that continue one another, each with its lexicon.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Literal, Sequence

from attnkit.errors import DataError, MissingDependencyError

Segmenter = Literal["none", "jieba", "spaces"]


def _jieba_words(text: str) -> list[str]:
    try:
        import jieba
    except ImportError as e:
        raise MissingDependencyError("data.segmenter=jieba needs the jieba package: pip install jieba") from e
    jieba.setLogLevel(60)  # no start-up messages on stderr
    return list(jieba.cut(text))


def word_boundaries(text: str, segmenter: Segmenter) -> set[int]:
    """The character offsets in ``text`` where the segmenter's words begin."""
    if segmenter == "spaces":
        return {0} | {m.end() for m in re.finditer(r"\s+", text)}
    if segmenter != "jieba":
        raise ValueError(f"segmenter={segmenter!r}: choose jieba or spaces")
    starts, at = set(), 0
    for w in _jieba_words(text):
        starts.add(at)
        at += len(w)
    return starts


def segmented_starts(text: str, offsets: Sequence[tuple[int, int]], segmenter: Segmenter) -> list[bool]:
    """For each token of ``text`` (its character ``offsets``), whether it begins a segmenter's word.

    A token starting inside a word continues it; the first token always begins one.
    """
    bounds = word_boundaries(text, segmenter)
    return [t == 0 or start in bounds for t, (start, _) in enumerate(offsets)]


class PhraseLexicon:
    """Phrases or entities, each one masking unit: occurrences matched case-insensitively, longest first, and for a
    phrase that begins (ends) with a Latin letter or digit only where no letter or digit comes before (after) it.

    Args:
        phrases: the phrases (white space inside one is matched by any run of white space).
    """

    def __init__(self, phrases: Sequence[str]) -> None:
        items = sorted({" ".join(p.split()) for p in phrases if p.strip()}, key=len, reverse=True)
        if not items:
            raise DataError("the phrase lexicon is empty; give one phrase or entity a line")
        edge = "0-9A-Za-z"

        def pattern(p: str) -> str:
            body = r"\s+".join(re.escape(w) for w in p.split(" "))
            return (f"(?<![{edge}])" if p[0].isascii() and p[0].isalnum() else "") + body + \
                   (f"(?![{edge}])" if p[-1].isascii() and p[-1].isalnum() else "")

        self.phrases = items
        self.regex = re.compile("|".join(pattern(p) for p in items), re.IGNORECASE)

    @classmethod
    def from_file(cls, path: str | Path) -> "PhraseLexicon":
        """One phrase a line of a UTF-8 file."""
        p = Path(path)
        if not p.is_file():
            raise DataError(f"phrase lexicon {p} does not exist; give a file of one phrase or entity a line")
        return cls(p.read_text(encoding="utf-8").splitlines())

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The character spans of the phrases in ``text``, left to right, never overlapping."""
        return [m.span() for m in self.regex.finditer(text)]

    def merge(self, text: str, offsets: Sequence[tuple[int, int]], starts: list[bool]) -> list[bool]:
        """``starts`` with each phrase occurrence made one unit: a token that starts inside a phrase continues it."""
        out = list(starts)
        for lo, hi in self.spans(text):
            for t, (start, _) in enumerate(offsets):
                if lo < start < hi:
                    out[t] = False
        return out


def starts_function(segmenter: Segmenter) -> Callable[[str, Sequence[tuple[int, int]]], list[bool]] | None:
    """``segmented_starts`` bound to ``segmenter``, or None for ``none`` (the tokenizer's own words)."""
    if segmenter == "none":
        return None
    if segmenter == "jieba":
        _jieba_words("")  # a missing package fails here, before any text is read
    return lambda text, offsets: segmented_starts(text, offsets, segmenter)


__all__ = ["PhraseLexicon", "Segmenter", "segmented_starts", "starts_function", "word_boundaries"]
