"""GLUE-style sentence and sentence-pair classification files (Wang et al. 2019).

Two native layouts, told apart by the header row:

* single sentences (SST-2): ``sentence<TAB>label``;
* sentence pairs (RTE, and MNLI/QNLI-like files): ``index<TAB>sentence1<TAB>sentence2<TAB>label``
  (any column order; extra columns are ignored).

Fields are split on tabs with quoting off (``csv.QUOTE_NONE``): RTE has unbalanced ``"`` inside
sentences. SST-2 keeps a trailing space before the tab; sentences are stripped. A file without a
``label`` column (GLUE test files) reads with ``labels=None``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from attnkit.errors import DataError
from attnkit.io import utf8_lines

PAIR_COLUMNS = (("sentence1", "sentence2"), ("question", "sentence"), ("question1", "question2"), ("premise", "hypothesis"))


@dataclass
class ClassificationData:
    """Sentences (and second sentences for pairs) with their string labels."""

    texts: list[str]
    pairs: list[str] | None  # second sentences, or None for single-sentence tasks
    labels: list[str] | None  # None when the file has no label column
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def label_names(self) -> tuple[str, ...]:
        """The distinct labels, sorted (numerically when every label is an integer)."""
        names = set(self.labels or ())
        if all(n.lstrip("-").isdigit() for n in names):
            return tuple(sorted(names, key=int))
        return tuple(sorted(names))


def read_classification_tsv(path: str | os.PathLike, *, limit: int | None = None) -> ClassificationData:
    """Read a GLUE ``.tsv`` file (single sentences or pairs, detected from the header).

    Args:
        path: the file.
        limit: read at most this many examples (for quick runs and tests).

    Raises:
        DataError: a missing file, an unknown header, or a row with too few fields (naming file:line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(utf8_lines(f, path), delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None:
            raise DataError(f"{path} is empty; expected a header such as 'sentence<TAB>label'")
        header = [h.strip() for h in header]
        col = {name: i for i, name in enumerate(header)}
        first_second = next(((a, b) for a, b in PAIR_COLUMNS if a in col and b in col), None)
        if first_second is not None:
            text_cols = [col[first_second[0]], col[first_second[1]]]
        elif "sentence" in col:
            text_cols = [col["sentence"]]
        else:
            raise DataError(
                f"{path}:1: header {header!r} names no text column; expected 'sentence' (single) or 'sentence1' and 'sentence2' (pairs)"
            )
        label_col = col.get("label")
        need = max([*text_cols, label_col if label_col is not None else 0]) + 1
        texts: list[str] = []
        pairs: list[str] = []
        labels: list[str] = []
        for row in rows:
            if limit is not None and len(texts) >= limit:
                break
            line = rows.line_num
            if not any(field.strip() for field in row):
                continue  # blank line (e.g. at the end of the file)
            if len(row) < need:
                raise DataError(f"{path}:{line}: {len(row)} tab-separated fields, expected {len(header)} ({', '.join(header)})")
            texts.append(row[text_cols[0]].strip())
            if len(text_cols) == 2:
                pairs.append(row[text_cols[1]].strip())
            if label_col is not None:
                label = row[label_col].strip()
                if not label:
                    raise DataError(f"{path}:{line}: empty label")
                labels.append(label)
    return ClassificationData(texts, pairs if len(text_cols) == 2 else None, labels if label_col is not None else None, str(path))


def check_labels(train_labels: Sequence[str], data: ClassificationData) -> None:
    """Raise if ``data`` has labels that ``train_labels`` lacks, listing them."""
    unseen = sorted(set(data.labels or ()) - set(train_labels))
    if unseen:
        raise DataError(
            f"{data.source} has labels the training data never had: {', '.join(map(repr, unseen))} "
            f"(training labels: {', '.join(map(repr, train_labels))})"
        )


def read_sentences(lines: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """Plain input for prediction: one example per line, ``A<TAB>B`` for a pair; blank lines skipped.

    Either every line is a pair or none is.
    """
    rows = [line.rstrip("\r\n") for line in lines if line.strip()]
    split = [r.split("\t") for r in rows]
    wide = next((n for n, s in enumerate(split) if len(s) > 2), None)
    if wide is not None:
        raise DataError(f"non-blank input line {wide + 1} has {len(split[wide])} tab-separated fields; give one sentence, or a pair A<TAB>B, a line")
    n_pairs = sum(len(s) >= 2 for s in split)
    if n_pairs == 0:
        return [r.strip() for r in rows], None
    if n_pairs != len(rows):
        raise DataError(f"{n_pairs} of {len(rows)} input lines are tab-separated pairs; give all pairs or all single sentences")
    return [s[0].strip() for s in split], ["\t".join(s[1:]).strip() for s in split]
