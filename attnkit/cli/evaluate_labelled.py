"""attnkit eval classify|ner: score a fine-tuned classifier or tagger on labelled data.

The model runs in fp32 (the trainer's own evaluations use its precision, bf16 on a GPU by
default, so a borderline example can land differently). Inputs longer than --max-len (default:
the model's position limit) are truncated and counted. Labels the model was not trained with
are an error that lists them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from attnkit.errors import CheckpointError, ConfigError
from attnkit.evaluation import labelled_logits, labelled_scores


DESCRIPTIONS = {
    "classify": """attnkit eval classify: accuracy of a fine-tuned classifier on labelled data.

    attnkit eval classify --model runs/sst2/model --data sst2/dev.tsv

--data is a GLUE-style TSV with a label column: sentence<TAB>label (SST-2) or
index<TAB>sentence1<TAB>sentence2<TAB>label (sentence pairs, RTE). The model runs in fp32;
rows longer than --max-len tokens (default: the model's position limit) are truncated and
counted. Labels the model was not trained with are an error that lists them.
""",
    "ner": """attnkit eval ner: entity precision, recall and F1 of a fine-tuned tagger on a CoNLL file.

    attnkit eval ner --model runs/ner/model --data emerging.test.annotated

--data is a CoNLL file (token<TAB>tag, a blank line between sentences). Each word's tag is
read from its first sub-word; entities are scored as conlleval and seqeval define them (an
entity counts when its type and both boundaries match). The model runs in fp32; sentences
longer than --max-len tokens (default: the model's position limit) are truncated and counted,
and the words cut off are tagged O. Tags the model was not trained with are an error that
lists them.
""",
}


def add_parsers(tasks: Any) -> None:
    """Add eval classify and eval ner, each with its own page, to the eval subcommands ``tasks``."""
    for task, help_ in (("classify", "accuracy of a classifier on a labelled TSV"),
                        ("ner", "entity precision / recall / F1 of a tagger on a CoNLL file")):
        t = tasks.add_parser(task, help=help_, description=DESCRIPTIONS[task], formatter_class=argparse.RawDescriptionHelpFormatter)
        kind = "classifier" if task == "classify" else "tagger"
        t.add_argument("--model", type=Path, required=True, help=f"model directory of a {kind} (OUT/model of attnkit finetune {task})")
        t.add_argument("--data", type=Path, required=True,
                       help="a TSV with a label column" if task == "classify" else "a CoNLL file with gold tags")
        t.add_argument("--max-len", type=int, default=None, help="tokens per row, specials included (default: the model's limit)")
        t.add_argument("--batch-size", type=int, default=128, help="rows per forward pass (default: 128)")
        t.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
        t.add_argument("--json", action="store_true", help="print the scores as one JSON object")
        t.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.loading import load_model_and_tokenizer
    from attnkit.models.bert_heads import BertClassifier, BertTagger
    from attnkit.models.xlnet_heads import XLNetClassifier, XLNetTagger
    from attnkit.training import pick_device

    if not args.data.is_file():
        raise ConfigError(f"{args.data} is not a file; eval {args.task} takes the labelled file itself "
                          f"({'a TSV with a label column' if args.task == 'classify' else 'a CoNLL file'})")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size={args.batch_size} must be >= 1")
    device = pick_device(args.device)
    model, tok = load_model_and_tokenizer(args.model, None, map_location=device)  # the device's free memory checked first
    kind = (BertClassifier, XLNetClassifier) if args.task == "classify" else (BertTagger, XLNetTagger)
    if not isinstance(model, kind):
        raise CheckpointError(f"{args.model} holds a {type(model).__name__}; eval {args.task} needs a "
                              f"{'classifier' if args.task == 'classify' else 'tagger'} from 'attnkit finetune {args.task}'")
    limit = model.config.encoder.max_len if args.max_len is None else min(args.max_len, model.config.encoder.max_len)
    model.eval()
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
