"""``attnkit eval classify|ner``: score a fine-tuned classifier or tagger on labelled data.

    attnkit eval classify --model runs/sst2/model --data sst2/dev.tsv          # accuracy
    attnkit eval ner --model runs/ner/model --data emerging.test.annotated      # entity precision / recall / F1

``classify`` reads a GLUE-style TSV with a ``label`` column (sentence pairs too), ``ner`` a CoNLL
file (a word's tag on its first sub-word, entity scores as conlleval/seqeval define them). The
model runs in fp32 (the trainer's own evaluations use its precision, bf16 on a GPU by default, so
a borderline example can land differently). Inputs longer than ``--max-len`` (default: the
model's position limit) are truncated and counted; words cut off that way are tagged ``O``.
Labels the model was not trained with are an error that lists them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from attnkit.errors import CheckpointError, ConfigError


def labelled_logits(model: Any, tok: Any, task: str, path: Path, max_len: int, device: Any,
                    batch_size: int = 128) -> tuple[list[Any], Any, Any, list[str]]:
    """A saved classifier's or tagger's logits on the labelled file ``path``: ``(logits, data, encoding, labels)``.

    ``task`` is ``classify`` (a TSV with a label column) or ``ner`` (a CoNLL file); rows are cut at
    ``max_len`` tokens. Labels the model does not know are a :class:`DataError` listing them.
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
    """Accuracy (``classify``), or entity precision/recall/F1 and counts (``ner``), of per-example ``outputs``
    (logits or probabilities: only their argmax counts) against the data's gold labels."""
    from attnkit.training import finetune as ft

    if task == "classify":
        gold = [labels.index(y) for y in data.labels]
        return {"accuracy": sum(int(o.argmax()) == g for o, g in zip(outputs, gold)) / len(gold)}
    from attnkit.metrics import entity_scores

    pred = ft.word_tags(outputs, enc.word_ids, [len(s) for s in data.tokens], labels)
    s = entity_scores(data.tags, pred)
    return {"precision": s.precision, "recall": s.recall, "f1": s.f1, "entities": s.n_gold, "predicted": s.n_pred, "correct": s.n_correct}


def run(args: argparse.Namespace) -> int:
    from attnkit.cli.finetune import load_model_and_tokenizer
    from attnkit.models.bert_heads import BertClassifier, BertTagger
    from attnkit.training import pick_device

    for flag, value in (("--beam", args.beam), ("--length-penalty", args.length_penalty), ("--hypotheses", args.hypotheses),
                        ("--src", args.src), ("--tgt", args.tgt), ("--split", args.split)):
        if value is not None:
            raise ConfigError(f"{flag} is for eval translate; eval {args.task} reads one file given by --data")
    if not args.data.is_file():
        raise ConfigError(f"{args.data} is not a file; eval {args.task} takes the labelled file itself "
                          f"({'a TSV with a label column' if args.task == 'classify' else 'a CoNLL file'})")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size={args.batch_size} must be >= 1")
    model, tok = load_model_and_tokenizer(args.model, None)
    kind = BertClassifier if args.task == "classify" else BertTagger
    if not isinstance(model, kind):
        raise CheckpointError(f"{args.model} holds a {type(model).__name__}; eval {args.task} needs a "
                              f"{'classifier' if args.task == 'classify' else 'tagger'} from `attnkit finetune {args.task}`")
    limit = model.config.encoder.max_len if args.max_len is None else min(args.max_len, model.config.encoder.max_len)
    device = pick_device(args.device)
    model.to(device).eval()
    start = time.perf_counter()
    logits, data, enc, labels = labelled_logits(model, tok, args.task, args.data, limit, device, args.batch_size)
    record: dict[str, Any] = {"task": args.task, "data": str(args.data), "examples": len(enc), "truncated": enc.truncated, "max_len": limit,
                              **labelled_scores(args.task, logits, data, enc, labels), "seconds": time.perf_counter() - start}
    if args.json:
        print(json.dumps(record))
        return 0
    cut = f"; {enc.truncated} truncated to {limit} tokens" if enc.truncated else ""
    print(f"{args.data}: {len(enc)} {'examples' if args.task == 'classify' else 'sentences'}{cut}")
    if args.task == "classify":
        print(f"accuracy = {100 * record['accuracy']:.2f}")
    else:
        print(f"entities: {record['entities']} gold, {record['predicted']} predicted, {record['correct']} correct")
        print(f"precision = {100 * record['precision']:.2f}  recall = {100 * record['recall']:.2f}  F1 = {100 * record['f1']:.2f}")
    return 0
