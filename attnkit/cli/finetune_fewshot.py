"""attnkit finetune fewshot: prompt-based few-shot classification (PET, P-tuning prompts, LM-BFF protocol)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_task_parser, run_job

DESCRIPTION = """Few-shot classification with a masked LM's cloze questions (PET, Schick & Schuetze 2021).

  attnkit finetune fewshot --recipe sst2-pet --data-root DATA --out runs/sst2-pet
  attnkit finetune fewshot --model DIR --train train.tsv --test dev.tsv \\
      --patterns "{a} It was [MASK]." "{a} All in all, it was [MASK]." \\
      --verbalizer negative=terrible,positive=great --shots 16 --seeds 5 --out runs/pet
  attnkit finetune fewshot ... --peft ptuning          # a P-tuning prompt before each pattern
  attnkit finetune fewshot ... --method finetune       # the baseline: a classifier on the same K-shot sets
  attnkit finetune fewshot ... --patterns auto         # AutoPrompt: trigger tokens found by gradient-guided search

The files are GLUE .tsv. For each of --seeds seeds, --shots examples per class and a dev set of
as many are drawn from --train (the LM-BFF protocol, Gao et al. 2021); every model is chosen on
its seed's dev set and scored on --test; eval.json holds the mean and standard deviation over
the seeds, OUT/seeds.json each seed's scores. A pattern holds {a} (and {b} for sentence pairs)
and one [MASK]; the verbaliser maps every label to one vocabulary token. A label's score is the
masked LM's logit of its token at the mask; each pattern's model is fine-tuned on those scores,
the patterns' ensemble labels the unlabelled rows (--unlabeled, default the rows of --train not
drawn) and a classifier is distilled from its soft labels (data.distill=false to stop at the
ensemble). Every PET run also reports each pattern's zero-shot test accuracy (no training).

--model needs a masked-LM head: a BertForMaskedLM directory, or the model of attnkit train mlm
(all-MiniLM-L6-v2 has none: adapt it first, e.g. attnkit train mlm --recipe sst2-tapt)."""
EPILOG = """Defaults (LM-BFF, appendix B): AdamW, lr 1e-5, batch 8, 1,000 steps, the dev set evaluated every
100 steps. More settings (--show-config lists them all): data.ensemble=uniform|prior,
data.temperature=2, data.unlabeled_limit=10000, data.distill_steps, peft.n_virtual (P-tuning)."""
FLAGS = {"peft": "peft.method", "model": "data.model", "tokenizer": "data.tokenizer", "train": "data.train", "test": "data.test",
         "unlabeled": "data.unlabeled", "verbalizer": "data.verbalizer", "shots": "data.shots", "seeds": "data.seeds",
         "method": "data.method", "max_len": "data.max_len"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fewshot")
    g.add_argument("--model", type=Path, metavar="DIR", help="a BERT-family masked LM directory (attnkit or Hugging Face; sets data.model)")
    g.add_argument("--tokenizer", type=Path, metavar="FILE", help="tokenizer.json or vocab.txt (default: the one in --model)")
    g.add_argument("--train", type=Path, metavar="FILE", help="labelled pool the K-shot sets are drawn from, GLUE .tsv (sets data.train)")
    g.add_argument("--test", type=Path, metavar="FILE", help="labelled file every model is scored on, GLUE .tsv (sets data.test)")
    g.add_argument("--unlabeled", type=Path, metavar="FILE", help="rows for distillation, GLUE .tsv, labels ignored (sets data.unlabeled)")
    g.add_argument("--patterns", nargs="+", metavar="PATTERN", help='cloze patterns, e.g. "{a} It was [MASK]." (sets data.patterns); '
                   "auto: AutoPrompt's trigger tokens, searched on each seed's training set (data.auto_template, data.auto_triggers)")
    g.add_argument("--verbalizer", metavar="LABEL=WORD,...", help="one vocabulary token per label (sets data.verbalizer)")
    g.add_argument("--shots", type=int, metavar="K", help="training examples per class, and as many dev examples (sets data.shots; default 16)")
    g.add_argument("--seeds", type=int, metavar="N", help="samples of the K-shot sets, seeds 0 .. N-1 (sets data.seeds; default 5)")
    g.add_argument("--method", choices=("pet", "finetune"), help="pet (default) or finetune, a classifier on the same sets (sets data.method)")
    g.add_argument("--peft", choices=("ptuning", "prompt"), metavar="METHOD",
                   help="a soft prompt before each pattern on a frozen masked LM: ptuning or prompt (sets peft.method)")
    g.add_argument("--max-len", type=int, metavar="N", help="tokens per row, specials included (sets data.max_len; default 128)")


def run(args: argparse.Namespace) -> int:
    from attnkit.cli.train import flag_assignments

    flags = flag_assignments(args, FLAGS)
    if args.patterns:
        flags.append(f"data.patterns={json.dumps(list(args.patterns))}")
    return run_job(args, "fewshot", flags)


def add_parser(finetune_subparsers: Any) -> None:
    """Add fewshot to the subcommands of attnkit finetune."""
    add_task_parser(finetune_subparsers, "fewshot", help="few-shot classification: PET cloze patterns, P-tuning prompts (GLUE .tsv)",
                    description=DESCRIPTION, epilog=EPILOG, add_arguments=add_arguments, run=run, set_task=True)
