"""Long classification documents composed from labelled sentences, labelled by their majority sentiment.

The long-document task of chunked classification (issue: "a classification set whose documents exceed 512
tokens, e.g. concatenations of related short texts"), built deterministically from a sentence set such as SST-2.
Each document is a run of labelled sentences of two classes:

* filler: equally many sentences of each class, shuffled, until the document reaches ``words`` words;
* evidence: ``evidence`` further sentences of the document's class y, kept together and inserted at a uniformly
  drawn place among the filler.

The document's label is the majority class of its sentences, which is y by a margin of exactly ``evidence``
sentences. The whole surplus sits in one stretch that may fall anywhere in the document, so a reader that sees only
the first window (truncation) finds it with the probability that the stretch starts inside that window, and is at
chance otherwise; reading every chunk (averaging the chunks' predictions, or carrying a memory from chunk to chunk
as in the Recurrent Memory Transformer, Bulatov et al. 2022) can find it wherever it is.

Documents alternate between the two classes (document i has class i mod 2). Sentences within one document are
distinct; across documents they are drawn again. The same arguments give the same documents on every machine
(``random.Random(seed)``). :func:`build_sst2_documents` writes ``train.tsv`` and ``dev.tsv`` in the GLUE layout
(``sentence<TAB>label``), training documents from the training sentences and dev documents from the dev
sentences, so no sentence of a dev document is seen in training (SST-2's training phrases come from other reviews
than its dev sentences). ``attnkit data majority-documents`` runs it from the command line.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from attnkit.errors import DataError


@dataclass(frozen=True)
class MajorityDocument:
    """One composed document.

    Attributes:
        text: the sentences joined by single spaces.
        label: the class of the majority of its sentences.
        sentences: sentences in the document.
        evidence_at: where the evidence stretch starts, as the fraction of the document's words before it.
    """

    text: str
    label: str
    sentences: int
    evidence_at: float


def _check(name: str, value: int, least: int) -> None:
    if value < least:
        raise ValueError(f"{name}={value!r} must be at least {least}")


def compose_documents(sentences: Sequence[str], labels: Sequence[str], *, documents: int, words: int = 1500,
                      evidence: int = 16, min_words: int = 8, seed: int = 0) -> list[MajorityDocument]:
    """Documents of about ``words`` words whose label is the majority class of their sentences (module docstring).

    Args:
        sentences: labelled sentences to draw from.
        labels: their classes; exactly two distinct values among the sentences kept.
        documents: how many documents.
        words: filler is added (one sentence of each class at a time) until the document has at least this many
            words, evidence included.
        evidence: the majority's margin: sentences of the document's class beyond the balanced filler.
        min_words: sentences of fewer words are not used.
        seed: seed of the draws.

    Returns:
        ``documents`` documents, classes alternating (sorted class names, the first one first).

    Raises:
        ValueError: a bad count, ``sentences`` and ``labels`` of different lengths, not exactly two classes, or
            too few sentences of a class to fill one document.
    """
    _check("documents", documents, 0)
    _check("words", words, 1)
    _check("evidence", evidence, 1)
    if len(sentences) != len(labels):
        raise ValueError(f"sentences ({len(sentences)}) and labels ({len(labels)}) differ in length")
    pools: dict[str, list[str]] = {}
    for s, y in zip(sentences, labels):
        s = " ".join(s.split())
        if len(s.split()) >= min_words:
            pools.setdefault(y, []).append(s)
    classes = sorted(pools)
    if len(classes) != 2:
        raise ValueError(f"labels: the sentences of at least min_words={min_words} words hold the classes {classes!r}; "
                         "majority documents need exactly two")
    # sentences of one class a document may need: its evidence, and filler until the words run out
    need = evidence + words // min_words + 1
    for y in classes:
        if len(pools[y]) < need:
            raise ValueError(f"sentences: class {y!r} has {len(pools[y])} sentences of at least {min_words} words; "
                             f"a document of {words} words with evidence={evidence} may need {need}")
    rng = random.Random(seed)
    out = []
    for i in range(documents):
        y = classes[i % 2]
        drawn = {c: [pools[c][j] for j in rng.sample(range(len(pools[c])), need)] for c in classes}  # distinct within the document
        shown = drawn[y][:evidence]
        filler: list[str] = []
        a, b = drawn[classes[0]], drawn[classes[1]]
        ia, ib = (evidence, 0) if y == classes[0] else (0, evidence)  # the evidence used the first sentences of class y
        total = sum(len(s.split()) for s in shown)
        while total < words:
            pair = [a[ia], b[ib]]
            ia, ib = ia + 1, ib + 1
            filler += pair
            total += sum(len(s.split()) for s in pair)
        rng.shuffle(filler)
        at = rng.randint(0, len(filler))
        before = sum(len(s.split()) for s in filler[:at])
        parts = filler[:at] + shown + filler[at:]
        out.append(MajorityDocument(text=" ".join(parts), label=y, sentences=len(parts), evidence_at=before / total))
    return out


def write_tsv(path: str | os.PathLike, documents: Sequence[MajorityDocument]) -> Path:
    """Write ``documents`` as a GLUE ``sentence<TAB>label`` file (read by ``finetune classify``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("sentence\tlabel\n")
        for d in documents:
            if "\t" in d.text or "\n" in d.text:
                raise DataError(f"a document for {path} holds a tab or a line break; the TSV cannot carry it")
            f.write(f"{d.text}\t{d.label}\n")
    tmp.replace(path)
    return path


def build_sst2_documents(sst2: str | os.PathLike, out: str | os.PathLike, *, train_documents: int = 4000,
                         dev_documents: int = 500, words: int = 1500, evidence: int = 16, min_words: int = 8,
                         seed: int = 0) -> dict[str, Path]:
    """Write majority documents made from SST-2: ``out/train.tsv`` from ``sst2/train.tsv``, ``out/dev.tsv`` from
    ``sst2/dev.tsv``.

    Args:
        sst2: the folder of SST-2's ``train.tsv`` and ``dev.tsv``.
        out: the folder to write.
        train_documents: training documents.
        dev_documents: dev documents.
        words, evidence, min_words: as in :func:`compose_documents`.
        seed: seed of the training documents; the dev documents take ``seed + 1``.

    Returns:
        ``{"train": path, "dev": path}``.

    Raises:
        DataError: a missing or malformed SST-2 file.
    """
    from attnkit.data.glue import read_classification_tsv

    written = {}
    for split, n, s in (("train", train_documents, seed), ("dev", dev_documents, seed + 1)):
        data = read_classification_tsv(Path(sst2) / f"{split}.tsv")
        if data.labels is None or data.pairs is not None:
            raise DataError(f"{Path(sst2) / f'{split}.tsv'} must hold single sentences with a 'label' column")
        docs = compose_documents(data.texts, data.labels, documents=n, words=words, evidence=evidence,
                                 min_words=min_words, seed=s)
        written[split] = write_tsv(Path(out) / f"{split}.tsv", docs)
    return written
