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
"""

from __future__ import annotations

import re
from typing import Callable, Literal, Sequence

from attnkit.errors import MissingDependencyError

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


def starts_function(segmenter: Segmenter) -> Callable[[str, Sequence[tuple[int, int]]], list[bool]] | None:
    """``segmented_starts`` bound to ``segmenter``, or None for ``none`` (the tokenizer's own words)."""
    if segmenter == "none":
        return None
    if segmenter == "jieba":
        _jieba_words("")  # a missing package fails here, before any text is read
    return lambda text, offsets: segmented_starts(text, offsets, segmenter)


__all__ = ["Segmenter", "segmented_starts", "starts_function", "word_boundaries"]
