"""``attnkit train listops --attention KIND``: Long Range Arena ListOps with any attention kernel.

The data are generated here from the task's definition (:mod:`attnkit.data.listops`; LRA
sizes: 96,000 / 2,000 / 2,000 examples of 500-2,000 tokens, 10 classes) in parallel
processes and cached in ``--cache`` (default: ``--out``) as ``listops-<hash>.pt``; smaller
runs: ``--set data.train_size=20000``. The model (:class:`attnkit.models.EncoderClassifier`)
starts from ``--preset``: ``lra-listops`` (LRA's configuration: 6 layers, d_model 512, 8 heads,
d_ff 2048) or ``listops-small`` (4 layers, d_model 128, 4 heads, d_ff 512: a few GPU minutes);
mean pooling and a linear head. ``--attention KIND`` picks the kernel with ListOps defaults
for its parameters (``attnkit.training.listops.ATTENTION_DEFAULTS``); change one with
``--set model.attention.params.window=128``.

Recipe (LRA's 5,000 steps of 32 sequences): AdamW (0.9, 0.98), lr 5e-4, weight decay 0.01,
500 warm-up steps then linear decay, gradient clipping 1.0, bf16 autocast on a GPU. Every
``train.eval_every`` steps the validation loss and accuracy are recorded and the best model
(by validation accuracy) is saved in ``OUT/model``; at the end it is measured on the test
split and ``OUT/eval.json`` holds both.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_set_argument, apply_overrides, progress_writer
from attnkit.errors import CheckpointError, ConfigError

DEFAULT_TRAIN = dict(
    steps=5000, batch_size=32, optimizer="adamw", lr=5e-4, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01,
    schedule="linear", warmup=500, clip_norm=1.0, eval_every=500, log_every=50, label_smoothing=0.0,
    metric="accuracy", metric_mode="max", compile=False,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attention", default="scaled_dot", metavar="KIND", help="attention kernel (default: scaled_dot; see 'attnkit info')")
    p.add_argument("--preset", default="lra-listops", help="model preset: lra-listops (default), listops-small, listops-tiny")
    p.add_argument("--out", type=Path, default=Path("runs/listops"), help="output directory (default: runs/listops)")
    p.add_argument("--cache", type=Path, default=None, help="where the generated data are cached (default: --out)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_set_argument(p)


def build_configs(args: argparse.Namespace) -> dict[str, Any]:
    """``model``, ``train`` and ``data`` configs from the preset, ``--attention`` and ``--set``."""
    from attnkit.models.encoder_classifier import classifier_preset
    from attnkit.models.transformer import AttentionConfig
    from attnkit.training.config import TrainConfig
    from attnkit.training.listops import ListOpsDataConfig, attention_config, check_configs

    try:
        model_cfg = classifier_preset(args.preset)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    model_cfg = model_cfg.replace(attention=AttentionConfig(**attention_config(args.attention, model_cfg.max_len)))
    cfgs = apply_overrides(args.set, {"model": model_cfg, "train": TrainConfig(**DEFAULT_TRAIN), "data": ListOpsDataConfig()})
    check_configs(cfgs["model"], cfgs["data"])
    return cfgs


def run(args: argparse.Namespace) -> int:
    from attnkit.training.listops import train_listops

    cfgs = build_configs(args)
    out: Path = args.out
    if args.resume and not (out / "run_config.json").is_file():
        raise CheckpointError(f"--resume: {out / 'run_config.json'} does not exist; nothing to resume in {out}")
    _raise_recompile_limit()
    log = progress_writer(args.no_progress)
    # train_listops builds the model (a kernel's refusal of its parameters comes first), then the data
    report = train_listops(cfgs["model"], cfgs["train"], cfgs["data"], out, cache_dir=args.cache, resume=args.resume,
                           progress=not args.no_progress, log=log)
    best = report["best_validation_accuracy"]
    best_text = f"; best validation accuracy {best:.4f} at step {report['best_step']}" if best is not None else ""
    print(f"trained {report['steps']} steps in {report['train_seconds']:.1f}s{best_text}")
    print(f"test accuracy {report['test']['accuracy']:.4f} (loss {report['test']['loss']:.4f}); written to {out / 'eval.json'}")
    print(f"model saved to {out / 'model'}")
    return 0


def _raise_recompile_limit() -> None:
    """Sparse kernels compile FlexAttention once per padded length (up to 16 of them at LRA sizes)."""
    import torch

    if not torch.cuda.is_available():
        return  # nothing compiles; importing torch._dynamo alone takes seconds
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))


def add_parser(tasks: Any) -> None:
    """Register ``listops`` among the tasks of ``attnkit train``."""
    p = tasks.add_parser("listops", help="Long Range Arena ListOps with any attention kernel", description=__doc__,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=run)
