"""attnkit train listops: Long Range Arena ListOps with any attention kernel."""

from __future__ import annotations

import argparse
from typing import Any

from attnkit.cli.runner import add_run_arguments, run_command

DESCRIPTION = """Long Range Arena ListOps (Tay et al. 2020) with any attention kernel.

  attnkit train listops --recipe listops-small --out runs/listops
  attnkit train listops --attention sliding_window --preset listops-small --out runs/listops-window
  attnkit train listops --resume --out runs/listops

The data are generated from the task's definition (LRA sizes: 96,000 / 2,000 / 2,000 examples of
500-2,000 tokens, 10 classes) in parallel processes and cached in --cache (default: --out) as
listops-HASH.pt; smaller runs: --set data.train_size=20000. The model (an encoder classifier with
mean pooling and a linear head) starts from --preset: lra-listops (LRA's configuration: 6 layers,
d_model 512, 8 heads, d_ff 2048), listops-small (4 layers, d_model 128, 4 heads, d_ff 512) or
listops-tiny. --attention KIND picks the kernel (attnkit bench attention --help lists them); parameters the run
leaves unset take ListOps values (a window of 256 tokens, blocks of 64, 256 random features,
...); change one with --set model.attention.params.window=128.

Defaults (LRA's 5,000 steps of 32 sequences): AdamW (0.9, 0.98), lr 5e-4, weight decay 0.01, 500
warm-up steps then linear decay, gradient clipping 1.0, bf16 autocast on a GPU. Every
train.eval.every steps the validation loss and accuracy are recorded and the best model (by
validation accuracy) is saved in OUT/model; at the end it is scored on the test split and
OUT/eval.json holds test_accuracy, test_loss and every validation result."""

FLAGS = {"attention": "model.attention.kind", "cache": "data.cache"}


def add_parser(tasks: Any) -> None:
    """Register ``listops`` among the tasks of ``attnkit train``."""
    p = tasks.add_parser("listops", help="Long Range Arena ListOps with any attention kernel", description=DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("listops")
    g.add_argument("--attention", metavar="KIND", help="attention kernel, with ListOps values for its parameters "
                   "(sets model.attention.kind; default: scaled_dot; attnkit bench attention --help lists the kernels)")
    g.add_argument("--preset", help="model preset to start from: lra-listops (default), listops-small, listops-tiny")
    g.add_argument("--cache", metavar="DIR", help="where the generated data are cached (sets data.cache; default: --out)")
    add_run_arguments(p, "listops", out="runs/listops")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.cli.train import flag_assignments
    from attnkit.errors import ConfigError
    from attnkit.runs import job

    base = None
    if args.preset is not None:
        from attnkit.models.encoder_classifier import classifier_preset

        try:
            base = {"model": classifier_preset(args.preset)}
        except ValueError as e:
            raise ConfigError(str(e)) from None
    run_command(args, job("listops"), flag_assignments(args, FLAGS), base=base)
    return 0
