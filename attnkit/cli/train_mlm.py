"""attnkit train mlm: pretrain a BERT on text, or continue pretraining one (masked LM, optionally + NSP or SOP)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli.runner import add_run_arguments, run_command

DESCRIPTION = """Pretrain a BERT on your own text, or continue pretraining one (masked LM, optionally + NSP or SOP).

  attnkit train mlm --recipe bert-mlm-from-scratch --data-root DATA --out runs/mlm
  attnkit train mlm --recipe rte-tapt --data-root DATA --out runs/rte-tapt
  attnkit train mlm --text FILE [FILE ...] [--nsp | --sop | --sentence-structural] [--whole-word] --out runs/mlm
  attnkit train mlm --model DIR --text FILE --out runs/tapt

Documents are the blank-line-separated paragraphs of the text (--documents files: one document
per file) and sentences its non-empty lines (--sentences punct: lines also cut after . ! ?).
A GLUE .tsv file (both sentences of each row) or a CoNLL file (a sentence's words) is read as
one sentence a line, a new document every 50 sentences: the unlabelled text of a task's training
set. A .json file is a SQuAD v1.1 file: one document per paragraph, its context's sentences then
its questions (--set data.squad_questions=false: the contexts alone), less the last
data.squad_heldout_articles articles (those a --split-articles run evaluates on). Sentences are
packed in document order into [CLS] A [SEP] B [SEP] sequences of at most --max-seq-len tokens.
--nsp adds BERT's next-sentence prediction (50% IsNext, 50% NotNext from another document),
--sop ALBERT's sentence-order prediction (50% swapped), --sentence-structural StructBERT's sentence
structural objective (a third each: B follows A, precedes A, or comes from another document); without these the
model learns masked LM alone on full-sentence sequences (RoBERTa). Masking is BERT's (15% of
tokens: 80% [MASK], 10% random, 10% kept), drawn anew for every batch; --whole-word masks whole
words (--segmenter jieba: the words of Chinese text as the jieba segmenter finds them, Chinese
BERT-wwm's whole-word masking; --phrases FILE: each phrase or entity of the file one unit, ERNIE's phrase
and entity masking, or --phrases auto: the text's own collocations; --entities DIR: the entities a tagger from
attnkit finetune ner finds); --span-masking masks SpanBERT's spans (Joshi et al. 2020: whole words, span lengths from
Geo(0.2) clipped at 10, the 80/10/10 decided per span), and --span-boundary adds SpanBERT's span boundary
objective (each span token predicted again from the two tokens around its span); --word-structural adds StructBERT's word
objective (Wang et al. 2020: 5% of the trigrams of unmasked tokens shuffled, their order restored).

From scratch (no --model): without --tokenizer (a tokenizer.json or BERT vocab.txt) a WordPiece
vocabulary of --vocab-size tokens is learned from the text. The model starts from --preset
(default bert-tiny) with its vocabulary set to the tokenizer's. The recipe follows BERT
(appendix A.2: AdamW, betas (0.9, 0.999), weight decay 0.01, warm-up then linear decay, no label
smoothing) with a learning rate and length for small models (lr 5e-4, 2,000 steps of 32
sequences, 100 warm-up steps).

Continued pretraining (--model DIR): task-adaptive pretraining (TAPT) of Gururangan et al.
2020, "Don't Stop Pretraining", section 4: keep training a published encoder with masked LM on
the task's own unlabelled text, then fine-tune. DIR is an attnkit model directory, a Hugging
Face BERT-family directory (config.json + model.safetensors) or all-MiniLM-L6-v2 (the packaged
copy). Its encoder is copied strictly into the pretraining model; so is its masked-LM head when
it has one, and its NSP/SOP classifier when an attnkit BertPretraining trained the same pair
task; otherwise they start fresh and a line says so. The tokenizer is DIR's unless --tokenizer
is given, and must have the model's vocabulary size and [PAD] id. The architecture is the
checkpoint's: --preset, --vocab-size and --cased are refused, and --set model.KEY may change only
model.dropout and model.attention.dropout. The recipe is the one above with TAPT's learning rate,
1e-4, and a warm-up over the first 6% of train.steps (data.warmup_fraction) unless
train.schedule.warmup is set. The held-out loss of the loaded model is printed before training
and saved in OUT/start_eval.json. A sentence-transformers checkpoint's pooling (modules.json) is
copied into OUT/model, so that attnkit finetune classify pools as the source was trained.

Either way, the last data.valid_fraction of the documents are held out: every train.eval.every
steps the masked-LM loss and accuracy and the NSP/SOP accuracy on them are printed, and the best
model (lowest summed loss) is saved in OUT/model with its tokenizer. attnkit.load reads it back as
a BertPretraining whose encoder is .bert, and attnkit finetune classify|ner|qa --model OUT/model
fine-tunes that encoder. --resume --out DIR continues a run with the settings saved there."""

FLAGS = {"model": "data.model", "tokenizer": "data.tokenizer", "vocab_size": "data.vocab_size", "cased": "data.cased",
         "pair_task": "data.pair_task", "max_seq_len": "data.max_seq_len", "documents": "data.documents",
         "sentences": "data.sentences", "whole_word": "masking.whole_word",
         "span_masking": "masking.span", "span_boundary": "masking.span_boundary", "word_structural": "masking.word_structural",
         "segmenter": "data.segmenter", "phrases": "data.phrases", "entities": "data.entity_tagger"}


def add_parser(tasks: Any) -> None:
    """Register ``mlm`` among the tasks of ``attnkit train``."""
    p = tasks.add_parser("mlm", help="pretrain a BERT (masked LM, + NSP or SOP) on text, or continue pretraining one",
                         description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("mlm")
    g.add_argument("--text", type=Path, nargs="+", metavar="FILE",
                   help="UTF-8 text file(s) to pretrain on, or a task's .tsv / .conll / SQuAD .json training file (sets data.text)")
    g.add_argument("--model", type=Path, metavar="DIR", help="continue pretraining this attnkit or Hugging Face BERT-family directory, "
                   "or all-MiniLM-L6-v2 (sets data.model; default: a fresh --preset)")
    g.add_argument("--tokenizer", type=Path, metavar="FILE", help="tokenizer.json or vocab.txt (sets data.tokenizer; default: the one "
                   "in --model, else WordPiece learned from the text)")
    g.add_argument("--vocab-size", type=int, help="size of the learned WordPiece vocabulary (sets data.vocab_size; default 8000; "
                   "not with --model)")
    g.add_argument("--cased", action="store_const", const=True, help="the learned vocabulary keeps case and accents (sets data.cased; "
                   "default: lower-cased; not with --model)")
    g.add_argument("--preset", help="BERT preset to start from (default: bert-tiny; not with --model)")
    pair = g.add_mutually_exclusive_group()
    pair.add_argument("--nsp", action="store_const", dest="pair_task", const="nsp",
                      help="add next-sentence prediction, BERT (sets data.pair_task=nsp)")
    pair.add_argument("--sop", action="store_const", dest="pair_task", const="sop",
                      help="add sentence-order prediction, ALBERT (sets data.pair_task=sop)")
    pair.add_argument("--sentence-structural", action="store_const", dest="pair_task", const="sso",
                      help="add StructBERT's sentence structural objective: B follows A, precedes it, or comes from another "
                           "document, a third each (sets data.pair_task=sso)")
    g.add_argument("--whole-word", action="store_const", const=True, help="mask whole words (sets masking.whole_word)")
    g.add_argument("--segmenter", choices=("none", "jieba", "spaces"), help="where words begin in text without spaces, for "
                   "--whole-word and --span-masking: jieba's words (Chinese whole-word masking), or white space in pre-segmented "
                   "text (sets data.segmenter; default none: the tokenizer's words)")
    g.add_argument("--phrases", metavar="FILE|auto", help="ERNIE's phrase or entity masking: a file of one phrase or entity a line, "
                   "each occurrence masked as one unit by --whole-word or --span-masking; auto: the text's own collocations "
                   "(Mikolov et al. 2013; data.phrase_threshold, default 10), written to OUT/phrases.txt (sets data.phrases)")
    g.add_argument("--entities", metavar="DIR", help="ERNIE's entity masking: each entity that this tagger (from attnkit finetune "
                   "ner) finds in the text one unit for --whole-word or --span-masking, written to OUT/entities.txt "
                   "(sets data.entity_tagger)")
    g.add_argument("--span-boundary", action="store_const", const=True, help="SpanBERT's span boundary objective: predict each "
                   "span token again from the span's boundary tokens (sets masking.span_boundary; needs --span-masking)")
    g.add_argument("--span-masking", action="store_const", const=True, help="SpanBERT: mask spans of whole words, Geo(0.2) "
                   "lengths clipped at 10 (sets masking.span)")
    g.add_argument("--word-structural", type=float, nargs="?", const=0.05, metavar="SHARE", help="StructBERT's word objective: "
                   "shuffle SHARE of the trigrams (default 0.05) and restore them (sets masking.word_structural)")
    g.add_argument("--max-seq-len", type=int, help="tokens per sequence, specials included (sets data.max_seq_len; default 128)")
    g.add_argument("--documents", choices=("paragraphs", "files"), help="what a document is (sets data.documents; default: paragraphs)")
    g.add_argument("--sentences", choices=("lines", "punct"), help="what a sentence is (sets data.sentences; default: lines)")
    add_run_arguments(p, "mlm", out="runs/mlm")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.cli.train import flag_assignments
    from attnkit.errors import ConfigError
    from attnkit.runs import job
    from attnkit.runs.mlm import continued_train

    if args.model is not None:
        given = [f for f, v in (("--preset", args.preset), ("--vocab-size", args.vocab_size), ("--cased", args.cased)) if v is not None]
        if given:
            raise ConfigError(f"--model takes the architecture and vocabulary from {args.model}; leave out {', '.join(given)}")
    flags = flag_assignments(args, FLAGS)
    if args.text is not None:
        flags.append(f"data.text={json.dumps([str(t) for t in args.text])}")
    base: dict[str, Any] | None = None
    if args.preset is not None:
        from attnkit.models.bert import bert_preset

        try:
            base = {"model": bert_preset(args.preset)}
        except ValueError as e:
            raise ConfigError(str(e)) from None
    elif args.model is not None and args.recipe is None and not args.resume:
        base = {"train": continued_train()}  # TAPT's learning rate; the warm-up follows data.warmup_fraction
    run_command(args, job("mlm"), flags, base=base)
    return 0
