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
from typing import Any

from attnkit.errors import CheckpointError, ConfigError


def run(args: argparse.Namespace) -> int:
    import torch

    from attnkit.cli.finetune import load_model_and_tokenizer
    from attnkit.models.bert_heads import BertClassifier, BertTagger
    from attnkit.training import finetune as ft
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
    labels = list(model.config.labels)
    if not labels:
        raise CheckpointError(f"{args.model} does not name its labels (config labels is empty); eval needs them to compare")
    limit = model.config.encoder.max_len if args.max_len is None else min(args.max_len, model.config.encoder.max_len)
    device = pick_device(args.device)
    model.to(device).eval()
    start = time.perf_counter()
    if args.task == "classify":
        from attnkit.data.glue import check_labels, read_classification_tsv

        data = read_classification_tsv(args.data)
        if data.labels is None:
            raise ConfigError(f"{args.data} has no 'label' column; evaluation needs labels (attnkit predict labels unlabelled text)")
        check_labels(labels, data)
        enc = ft.encode_classification(tok, data, labels, limit)
    else:
        from attnkit.data.conll import check_tags, read_conll

        data = read_conll(args.data)
        check_tags(labels, data)
        enc = ft.encode_tagging(tok, data, labels, limit)
    if not len(enc):
        raise ConfigError(f"{args.data} holds no examples")
    with torch.no_grad():
        logits = ft.predict_logits(model, enc, pad_id=tok.pad_id, batch_size=args.batch_size, device=device)
    record: dict[str, Any] = {"task": args.task, "data": str(args.data), "examples": len(enc), "truncated": enc.truncated, "max_len": limit}
    if args.task == "classify":
        gold = [labels.index(y) for y in data.labels]
        record["accuracy"] = sum(int(lg.argmax()) == g for lg, g in zip(logits, gold)) / len(gold)
    else:
        from attnkit.metrics import entity_scores

        pred = ft.word_tags(logits, enc.word_ids, [len(s) for s in data.tokens], labels)
        s = entity_scores(data.tags, pred)
        record.update(precision=s.precision, recall=s.recall, f1=s.f1, entities=s.n_gold, predicted=s.n_pred, correct=s.n_correct)
    record["seconds"] = time.perf_counter() - start
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
