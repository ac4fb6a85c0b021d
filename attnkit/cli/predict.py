"""``attnkit predict --model DIR [FILE]``: labels or tags from a fine-tuned classifier or tagger.

Reads FILE (or ``--input FILE``, or stdin when neither is given):

* a classifier (``attnkit finetune classify``): one example per line, ``A<TAB>B`` for sentence
  pairs; prints one label per line (``--scores`` adds the probability of that label);
* a tagger (``attnkit finetune ner``): one sentence per line, words split on whitespace; prints
  CoNLL, ``word<TAB>tag`` lines with a blank line after each sentence. ``--conll`` reads a
  CoNLL file instead (its first column; any tag column is ignored).

Rows beyond the model's position limit (or ``--max-len``) are truncated and counted on stderr;
the words of a truncated sentence that did not fit are tagged ``O``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnkit.cli.helptext import plain
from attnkit.errors import CheckpointError, DataError
from attnkit.io import read_utf8


def add_parser(sub: Any) -> None:
    p = sub.add_parser("predict", help="label sentences or tag words with a fine-tuned model", description=plain(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", nargs="?", type=Path, default=None, help="input file (default: --input, else stdin)")
    p.add_argument("--model", type=Path, required=True, help="a model directory from attnkit finetune (or a Hugging Face one with labels)")
    p.add_argument("--input", type=Path, default=None, help="input file (same as FILE)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json or vocab.txt (default: the one in --model)")
    p.add_argument("--conll", action="store_true", help="the input is a CoNLL file (taggers only)")
    p.add_argument("--max-len", type=int, default=None, help="tokens per row, specials included (default: the model's limit)")
    p.add_argument("--batch-size", type=int, default=64, help="rows per forward pass, similar lengths together (default: 64)")
    p.add_argument("--scores", action="store_true", help="classifiers: print the label's probability after a tab")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.set_defaults(run=run)


def _lines(args: argparse.Namespace) -> list[str]:
    path = args.file or args.input
    if args.file is not None and args.input is not None:
        raise DataError("give the input either as FILE or as --input, not both")
    if path is None:
        return sys.stdin.read().splitlines()
    return read_utf8(path, "input file").splitlines()


def run(args: argparse.Namespace) -> int:
    import torch

    from attnkit.loading import load_model_and_tokenizer
    from attnkit.models.bert_heads import BertClassifier, BertTagger
    from attnkit.models.xlnet_heads import XLNetClassifier, XLNetTagger
    from attnkit.training import finetune as ft
    from attnkit.training import pick_device

    if args.batch_size < 1:
        raise DataError(f"--batch-size={args.batch_size} must be >= 1")
    device = pick_device(args.device)
    model, tok = load_model_and_tokenizer(args.model, args.tokenizer, map_location=device)  # the device's free memory checked first
    from attnkit.models.features import FeatureModel

    if not isinstance(model, (BertClassifier, BertTagger, XLNetClassifier, XLNetTagger, FeatureModel)):
        raise CheckpointError(f"{args.model} holds a {type(model).__name__}; predict needs a classifier or tagger from attnkit finetune")
    labels = list(model.config.labels) or [str(i) for i in range(model.config.num_labels)]
    limit = model.config.encoder.max_len if args.max_len is None else min(args.max_len, model.config.encoder.max_len)
    model.eval()
    if isinstance(model, (BertClassifier, XLNetClassifier)) or isinstance(model, FeatureModel) and model.config.task == "classify":
        if args.conll:
            raise DataError("--conll is for taggers; this model is a classifier")
        from attnkit.data.glue import ClassificationData, read_sentences

        texts, pairs = read_sentences(_lines(args))
        if not texts:
            return 0
        enc = ft.encode_classification(tok, ClassificationData(texts, pairs, None), labels, limit)
        _report_truncation(enc, limit)
        with torch.no_grad():
            logits = ft.predict_logits(model, enc, pad_id=tok.pad_id, batch_size=args.batch_size, device=device)
        for lg in logits:
            p = lg.softmax(-1)
            k = int(p.argmax())
            print(f"{labels[k]}\t{float(p[k]):.4f}" if args.scores else labels[k])
        return 0
    from attnkit.data.conll import TaggedSentences, read_conll, write_conll

    if args.conll:
        path = args.file or args.input
        if path is None:
            raise DataError("--conll needs an input file")
        sents = TaggedSentences(read_conll(path).tokens, None)
    else:
        sents = TaggedSentences([line.split() for line in _lines(args) if line.strip()], None)
    if not sents.tokens:
        return 0
    enc = ft.encode_tagging(tok, sents, labels, limit)
    _report_truncation(enc, limit)
    with torch.no_grad():
        logits = ft.predict_logits(model, enc, pad_id=tok.pad_id, batch_size=args.batch_size, device=device)
    tags = ft.word_tags(logits, enc.word_ids, [len(s) for s in sents.tokens], labels)
    sys.stdout.write(write_conll(sents.tokens, tags))
    return 0


def _report_truncation(enc: Any, limit: int) -> None:
    if enc.truncated:
        print(f"attnkit: truncated {enc.truncated} of {len(enc)} inputs to {limit} tokens", file=sys.stderr)
