"""The unlabelled text of a SQuAD v1.1 file, for task-adaptive masked-LM pretraining.

Task-adaptive pretraining (Gururangan et al. 2020, "Don't Stop Pretraining", section 4)
continues masked LM on the task's own unlabelled training text. For a reading-comprehension
file that text is the passages and, optionally, the questions: one document per paragraph,
its context cut into sentences after ``.``, ``!`` or ``?`` (:data:`~attnkit.data.pretraining.SENTENCE_END`),
then each of its questions as one more sentence. Paragraphs are those that
:func:`~attnkit.data.squad.parse_squad` keeps (at least one question with a usable answer),
so the text is the text the reading-comprehension recipes train on.

``heldout_articles`` leaves out the file's last N articles: the articles that
``split_articles=N`` (:func:`~attnkit.data.squad.split_articles`) evaluates on, which the stage
before such a recipe must never read.
"""

from __future__ import annotations

import os

from attnkit.data.pretraining import SENTENCE_END
from attnkit.data.squad import _load_json, parse_squad
from attnkit.errors import DataError


def squad_documents(path: str | os.PathLike, *, questions: bool = True, heldout_articles: int = 0) -> list[list[str]]:
    """The documents of a SQuAD v1.1 file, one per paragraph, each a list of sentences.

    Args:
        path: the JSON file.
        questions: append each paragraph's questions after its context's sentences.
        heldout_articles: leave out the last this many articles (those a ``split_articles`` split evaluates).

    Returns:
        Documents in file order; white space inside each sentence collapsed to single spaces.

    Raises:
        DataError: the file is missing or not SQuAD JSON, ``heldout_articles`` leaves no article, or no text remains.
    """
    parts = parse_squad(_load_json(path), str(path))
    if heldout_articles < 0 or heldout_articles >= len(parts):
        raise DataError(f"{path} has {len(parts)} articles; holding out {heldout_articles} must leave at least one to read")
    kept = parts[: len(parts) - heldout_articles]
    docs: list[list[str]] = []
    for _, article in kept:
        by_context: dict[str, list[str]] = {}  # paragraphs in file order, each with its questions
        for e in article.examples:
            by_context.setdefault(e.context, []).append(e.question)
        for context, qs in by_context.items():
            doc = [" ".join(s.split()) for s in SENTENCE_END.split(context) if s.strip()]
            if questions:
                doc += [" ".join(q.split()) for q in qs if q.strip()]
            if doc:
                docs.append(doc)
    if not docs:
        raise DataError(f"{path} gives no text from its first {len(kept)} articles; masked-LM pretraining needs text")
    return docs
