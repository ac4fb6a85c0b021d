"""Phrases found in the text itself, for ERNIE's phrase-level masking without a lexicon file.

ERNIE (Sun et al. 2019, section 3.2) masks phrases as units and finds them with a chunker. Here the
chunker is the data-driven one of Mikolov et al. 2013 ("Distributed Representations of Words and
Phrases and their Compositionality", section 4): a pair of adjacent words ``a b`` is a phrase when

    score(a, b) = (count(a b) - delta) / (count(a) * count(b)) * N   >   threshold

with ``N`` the number of words, so the score is how many times more often the pair occurs than two
independent words would, after the discount ``delta`` that keeps rare pairs out. Each pass joins the
phrases found into single words and scores again, so two passes reach phrases of up to four words
(Mikolov et al. run 2-4 passes with a decreasing threshold). Words are lower-cased runs of letters,
digits and apostrophes; no pair crosses a line. The phrases feed :class:`~attnkit.data.segment.PhraseLexicon`.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Sequence

WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def line_words(text: str) -> list[list[str]]:
    """The lower-cased words of each line of ``text``."""
    return [WORD.findall(line.lower()) for line in text.splitlines()]


def score_pairs(lines: Sequence[Sequence[str]], delta: float) -> dict[tuple[str, str], float]:
    """``score(a, b)`` of every adjacent pair (module docstring)."""
    unigrams: Counter[str] = Counter(w for line in lines for w in line)
    bigrams: Counter[tuple[str, str]] = Counter(p for line in lines for p in zip(line, line[1:]))
    n = sum(unigrams.values())
    return {(a, b): (c - delta) / (unigrams[a] * unigrams[b]) * n for (a, b), c in bigrams.items()}


def join_phrases(line: Sequence[str], phrases: set[tuple[str, str]]) -> list[str]:
    """``line`` with each phrase pair made one word, left to right (a word joins at most one pair)."""
    out: list[str] = []
    i = 0
    while i < len(line):
        if i + 1 < len(line) and (line[i], line[i + 1]) in phrases:
            out.append(f"{line[i]} {line[i + 1]}")
            i += 2
        else:
            out.append(line[i])
            i += 1
    return out


def collocation_phrases(texts: Iterable[str], *, delta: float = 5.0, threshold: float = 10.0, passes: int = 2) -> list[str]:
    """The phrases of ``texts`` by Mikolov et al.'s score, each ``passes`` pass joining the last one's phrases.

    Args:
        texts: documents or lines of text.
        delta: the discount (pairs seen ``delta`` times or fewer never qualify).
        threshold: the score a pair must exceed.
        passes: scoring rounds; the threshold halves after each (longer phrases are rarer).

    Returns:
        The phrases, words separated by one space, most words first.
    """
    if passes < 1 or delta < 0 or threshold <= 0:
        raise ValueError(f"passes={passes}, delta={delta}, threshold={threshold}: need passes >= 1, delta >= 0, threshold > 0")
    lines = [line for text in texts for line in line_words(text) if line]
    found: set[str] = set()
    t = threshold
    for _ in range(passes):
        pairs = {p for p, s in score_pairs(lines, delta).items() if s > t}
        if not pairs:
            break
        found |= {f"{a} {b}" for a, b in pairs}
        lines = [join_phrases(line, pairs) for line in lines]
        t /= 2
    return sorted(found, key=lambda p: (-len(p.split()), p))


__all__ = ["collocation_phrases", "join_phrases", "line_words", "score_pairs"]
