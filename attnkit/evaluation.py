"""Scoring a saved classifier or tagger on labelled data: accuracy, entity precision / recall / F1.

``classify`` data is a GLUE-style TSV with a ``label`` column (sentence pairs too); ``ner`` data
a CoNLL file, each word's tag read from its first sub-word and entities scored as conlleval
defines them (CoNLL-2003 shared task; :func:`attnkit.metrics.entity_scores`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attnkit.errors import CheckpointError, ConfigError


def labelled_logits(model: Any, tok: Any, task: str, path: Path, max_len: int, device: Any,
                    batch_size: int = 128) -> tuple[list[Any], Any, Any, list[str]]:
    """A saved classifier's or tagger's logits on the labelled file ``path``.

    Args:
        model: a :class:`~attnkit.models.BertClassifier` or ``XLNetClassifier`` (``classify``), or a
            :class:`~attnkit.models.BertTagger` or ``XLNetTagger`` (``ner``), whose config names its labels.
        tok: the model's WordPiece tokenizer.
        task: ``classify`` (a TSV with a label column) or ``ner`` (a CoNLL file).
        path: the labelled file.
        max_len: tokens per row, specials included; longer rows are cut and counted.
        device: where the model runs.
        batch_size: rows per forward pass.

    Returns:
        ``(logits, data, encoding, labels)``: one logits tensor per example (per sub-word for
        ``ner``), the data read, its encoding and the model's label names.

    Raises:
        DataError: labels the model does not know (listed).
        ConfigError: no label column, or no examples.
        CheckpointError: the model names no labels.
    """
    import torch

    from attnkit.training import finetune as ft

    labels = list(model.config.labels)
    if not labels:
        raise CheckpointError("the model does not name its labels (config labels is empty); evaluation needs them to compare")
    if task == "classify":
        from attnkit.data.glue import check_labels, read_classification_tsv

        data = read_classification_tsv(path)
        if data.labels is None:
            raise ConfigError(f"{path} has no 'label' column; evaluation needs labels (attnkit predict labels unlabelled text)")
        check_labels(labels, data)
        enc = ft.encode_classification(tok, data, labels, max_len)
    else:
        from attnkit.data.conll import check_tags, read_conll

        data = read_conll(path)
        check_tags(labels, data)
        enc = ft.encode_tagging(tok, data, labels, max_len)
    if not len(enc):
        raise ConfigError(f"{path} holds no examples")
    with torch.no_grad():
        logits = ft.predict_logits(model, enc, pad_id=tok.pad_id, batch_size=batch_size, device=device)
    return logits, data, enc, labels


def labelled_scores(task: str, outputs: list[Any], data: Any, enc: Any, labels: list[str]) -> dict[str, float]:
    """Scores of per-example ``outputs`` against the data's gold labels.

    Args:
        task: ``classify`` or ``ner``.
        outputs: logits or probabilities per example, as :func:`labelled_logits` returns them
            (only their argmax counts).
        data, enc, labels: the data, encoding and label names of :func:`labelled_logits`.

    Returns:
        ``{"accuracy"}`` for ``classify``; ``{"precision", "recall", "f1", "entities",
        "predicted", "correct"}`` (entity level) for ``ner``.
    """
    from attnkit.training import finetune as ft

    if task == "classify":
        gold = [labels.index(y) for y in data.labels]
        return {"accuracy": sum(int(o.argmax()) == g for o, g in zip(outputs, gold)) / len(gold)}
    from attnkit.metrics import entity_scores

    pred = ft.word_tags(outputs, enc.word_ids, [len(s) for s in data.tokens], labels)
    s = entity_scores(data.tags, pred)
    return {"precision": s.precision, "recall": s.recall, "f1": s.f1, "entities": s.n_gold, "predicted": s.n_pred, "correct": s.n_correct}


__all__ = ["labelled_logits", "labelled_scores"]
