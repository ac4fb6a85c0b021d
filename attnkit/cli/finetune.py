"""attnkit finetune TASK: fine-tune a BERT-family or XLNet model on labelled text.

Tasks: classify (sentences or sentence pairs, GLUE .tsv), ner (token classification, CoNLL),
qa (extractive question answering, SQuAD v1.1 JSON). Every task runs the same way:

  attnkit finetune TASK --recipe NAME [--quick] --data-root DATA --out DIR
  attnkit finetune TASK --model DIR --train FILE --dev FILE [--epochs N] [--set KEY=VALUE ...] --out DIR
  attnkit finetune TASK --resume --out DIR

The encoder of --model gets a fresh head; the best model by the dev metric goes to OUT/model
with its tokenizer (usable by attnkit predict and attnkit.load), its scores to OUT/eval.json.
--resume continues from the newest checkpoint with the settings saved in --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.runner import add_run_arguments, config_file_assignments, run_command
from attnkit.cli.train import flag_assignments

CLASSIFY_DESCRIPTION = """Fine-tune a BERT-family or XLNet model to classify sentences or sentence pairs (Devlin et al. 2019).

  attnkit finetune classify --recipe sst2-minilm --data-root DATA --out runs/sst2
  attnkit finetune classify --model DIR --train train.tsv --dev dev.tsv --out runs/clf
  attnkit finetune classify --resume --out runs/clf

The files are GLUE .tsv: sentence<TAB>label (SST-2) or index<TAB>sentence1<TAB>sentence2<TAB>label
(RTE; a pair becomes [CLS] A [SEP] B [SEP]). The labels are those of the training file; a dev
label training never had is an error. The dev set is evaluated once an epoch and the model with
the best dev accuracy is kept; --test FILE is scored once with that model at the end."""
NER_DESCRIPTION = """Fine-tune a BERT-family or XLNet model to tag words, e.g. named entities (Devlin et al. 2019, section 5.3).

  attnkit finetune ner --recipe wnut17-minilm --data-root DATA --out runs/wnut17
  attnkit finetune ner --model DIR --train train.conll --dev dev.conll --test test.conll --out runs/ner
  attnkit finetune ner --resume --out runs/ner

The files are CoNLL: token<TAB>tag lines, a blank line between sentences. Each word's tag sits
on its first sub-word; entity precision, recall and F1 are conlleval's. The dev set is evaluated
once an epoch and the model with the best entity F1 is kept; --test FILE is scored once with
that model at the end."""
EPILOG = """Rows longer than --max-len tokens (capped at the model's positions) are truncated and counted;
batches are padded to their own longest row, rows of similar length batched together.

Defaults: AdamW, lr 5e-5, batch 32, 3 epochs, linear decay after 10% warm-up, gradient clipping
1.0. One epoch is ceil(examples / (train.batch_size * train.grad_accum)) optimizer steps; giving
train.steps, train.schedule.warmup or train.eval.every yourself replaces the value counted from
the epochs. More settings (--show-config lists them all):
  train.optim.layer_decay=0.8   ELECTRA's layer-wise learning-rate decay (each layer 0.8 times the rate above it)
  train.reg.rdrop=1.0           R-Drop (Liang et al. 2021): each batch runs twice, their symmetric KL joins the loss
  train.reg.label_smoothing=0.1 smoothed training labels
  train.reg.ema_decay=0.999     evaluate and keep an exponential moving average of the weights
  train.init_seed=N             the fresh head's weights (train.seed: data order and dropout)
  data.classifier=mean          pooling of the sequence: auto, pooler, cls_tanh, cls_gelu, mean"""
DESCRIPTIONS = {"classify": CLASSIFY_DESCRIPTION, "ner": NER_DESCRIPTION}
HELP = {"classify": "sentence or sentence-pair classification (GLUE .tsv)", "ner": "token classification, named entities (CoNLL)"}
FLAGS = {"peft": "peft.method", "model": "data.model", "tokenizer": "data.tokenizer", "train": "data.train", "dev": "data.dev", "test": "data.test",
         "epochs": "data.epochs", "max_len": "data.max_len", "features": "data.features"}


def add_parser(sub: Any) -> None:
    from attnkit.cli import finetune_fewshot, finetune_mlm_qa, finetune_qa

    p = sub.add_parser("finetune", help="fine-tune a BERT-family model (classify, ner, qa)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for name in ("classify", "ner"):
        t = tasks.add_parser(name, help=HELP[name], description=DESCRIPTIONS[name], epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(t, name)
        add_run_arguments(t, name, out=f"runs/{name}")
        t.set_defaults(run=run, task=name)
    finetune_qa.add_parser(tasks)
    finetune_fewshot.add_parser(tasks)
    finetune_mlm_qa.add_parser(tasks)


def add_arguments(p: argparse.ArgumentParser, task: str) -> None:
    fmt = "GLUE .tsv" if task == "classify" else "CoNLL"
    g = p.add_argument_group(task)
    g.add_argument("--model", type=Path, metavar="DIR", help="attnkit or Hugging Face BERT-family directory, or all-MiniLM-L6-v2 (sets data.model)")
    g.add_argument("--tokenizer", type=Path, metavar="FILE", help="tokenizer.json or vocab.txt (default: the one in --model; sets data.tokenizer)")
    g.add_argument("--train", type=Path, metavar="FILE", help=f"training file, {fmt} (sets data.train)")
    g.add_argument("--dev", type=Path, metavar="FILE", help=f"dev file, {fmt}: chooses the best model (sets data.dev)")
    g.add_argument("--test", type=Path, metavar="FILE", help=f"labelled test file, {fmt}, scored once with the saved model (sets data.test)")
    g.add_argument("--epochs", type=float, metavar="N", help="passes over the training data (sets data.epochs; default 3)")
    g.add_argument("--peft", choices=("lora", "qlora", "prefix", "prompt", "ptuning", "ptuning-v2"), metavar="METHOD",
                   help="train an adapter instead of every weight: lora, qlora, prefix, prompt, ptuning, ptuning-v2 "
                   "(sets peft.method; peft.r, peft.alpha, peft.targets, peft.n_virtual ... with --set; OUT/model is the adapter)")
    g.add_argument("--max-len", type=int, metavar="N", help="tokens per row, specials included, capped at the model's positions "
                   "(sets data.max_len; default 128)")
    g.add_argument("--features", choices=("last", "last4", "weighted"), help="feature-based: the encoder stays frozen and its last "
                   "layer, last four layers concatenated, or ELMo's learned weighted sum of all layers feed a small task model "
                   "(a BiLSTM tagger for ner, a linear layer for classify; sets data.features)")


def schedule_flags(args: argparse.Namespace, flags: list[str]) -> list[str]:
    """``flags`` plus the switches that keep a schedule key the user gave (``train.steps`` etc.); none on resume."""
    from attnkit.runs.finetune import explicit_schedule

    if args.resume:
        return flags
    given = [*flags, *config_file_assignments(args.config, ["train", "data"]), *args.set]
    return [*flags, *explicit_schedule(given)]


def run(args: argparse.Namespace) -> int:
    from attnkit.runs import job

    run_command(args, job(args.task), schedule_flags(args, flag_assignments(args, FLAGS)))
    return 0
