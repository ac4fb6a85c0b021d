"""``attnkit train TASK``: train a model.

Encoder-decoder tasks with the paper's recipe: the synthetic sequence-transduction tasks
``reverse``, ``sort`` and ``copy``, and ``translate`` on a parallel corpus (``--src de --tgt en
--data DIR``, see :mod:`attnkit.cli.train_translate`); language models: ``lm`` (GPT,
:mod:`attnkit.cli.train_lm`) and ``mlm`` (BERT pretraining, :mod:`attnkit.cli.train_mlm`); ``listops`` (Long Range Arena
ListOps with any attention kernel, :mod:`attnkit.cli.train_listops`).
The model, training and data configs start from a preset and take ``--set`` overrides;
all are saved as JSON in the output directory.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli import train_translate
from attnkit.cli.common import add_set_argument, apply_overrides
from attnkit.errors import ConfigError

DEFAULT_TRAIN = dict(steps=2000, batch_size=64, warmup=400, lr=0.5, eval_every=250, log_every=20, metric="exact_match", metric_mode="max")


def add_parser(sub: Any) -> None:
    from attnkit.cli import train_listops, train_lm, train_mlm

    p = sub.add_parser("train", help="train a model (TASK: reverse, sort, copy, translate, lm, mlm, listops)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for name in ("reverse", "sort", "copy"):
        _add_seq2seq_options(tasks.add_parser(name, help=f"synthetic task: {name} digit strings (encoder-decoder)"))
    t = tasks.add_parser("translate", help="translation on a parallel corpus, the paper's recipe",
                         description=train_translate.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_seq2seq_options(t)
    train_translate.add_arguments(t)
    train_lm.add_parser(tasks)
    train_mlm.add_parser(tasks)
    train_listops.add_parser(tasks)


def _add_seq2seq_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="model preset (default: transformer-tiny; transformer-base for translate)")
    p.add_argument("--config", type=Path, help="a model config JSON file (instead of --preset)")
    p.add_argument("--out", type=Path, default=Path("runs/train"), help="output directory (default: runs/train)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_set_argument(p)
    p.set_defaults(run=run)


def build_configs(args: argparse.Namespace) -> dict[str, Any]:
    from attnkit.data.synthetic import SyntheticConfig
    from attnkit.data.tokenizer import char_tokenizer
    from attnkit.data.synthetic import DIGITS
    from attnkit.models.transformer import TransformerConfig, preset
    from attnkit.training.config import TrainConfig

    vocab = char_tokenizer(DIGITS).get_vocab_size()
    if args.config is not None:
        model_cfg = TransformerConfig.load(args.config)
    else:
        model_cfg = preset(args.preset or "transformer-tiny", src_vocab_size=vocab, tgt_vocab_size=vocab)
    cfgs = {"model": model_cfg, "train": TrainConfig(**DEFAULT_TRAIN), "data": SyntheticConfig(kind=args.task)}
    cfgs = apply_overrides(args.set, cfgs)
    if cfgs["model"].src_vocab_size < vocab or cfgs["model"].tgt_vocab_size < vocab:
        raise ConfigError(f"model vocabulary {cfgs['model'].src_vocab_size} is smaller than the task's {vocab} tokens; raise src/tgt_vocab_size")
    return cfgs


def run(args: argparse.Namespace) -> int:
    from attnkit.models.transformer import Transformer
    from attnkit.training import Seq2SeqTask, Trainer, pick_device
    from attnkit.data.seq2seq import PairDataset
    from attnkit.errors import CheckpointError

    if args.task == "translate":
        return train_translate.run(args)
    cfgs = build_configs(args)
    out: Path = args.out
    if args.resume:
        saved = out / "run_config.json"
        if not saved.is_file():
            raise CheckpointError(f"--resume: {saved} does not exist; nothing to resume in {out}")
    train_ds, valid_in, valid_out, tok = cfgs["data"].build()
    device = pick_device(cfgs["train"].device)
    task = Seq2SeqTask(
        train_ds,
        batch_size=cfgs["train"].batch_size,
        label_smoothing=cfgs["train"].label_smoothing,
        valid=PairDataset([(tok.encode(a).ids, tok.encode(b).ids) for a, b in zip(valid_in, valid_out)], name="validation set"),
        heldout=(valid_in, valid_out),
        tokenizer=tok,
        device=device,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "run_config.json").write_text(json.dumps({k: v.to_dict() for k, v in cfgs.items()}, indent=2) + "\n")
    import torch

    torch.manual_seed(cfgs["train"].seed)  # the initial weights are part of a reproducible run
    model = Transformer(cfgs["model"])
    result = Trainer(model, task, cfgs["train"], out, tokenizer=tok, progress=not args.no_progress).fit(resume=args.resume)
    last = result.evals[-1] if result.evals else {}
    print(f"trained {result.step} steps in {result.seconds:.1f}s; " + ", ".join(f"{k}={v:.4f}" for k, v in last.items() if k != "step"))
    print(f"model saved to {out / 'model'}")
    return 0
