"""``attnkit train translate``: the Transformer's translation recipe on a parallel corpus.

    attnkit train translate --src de --tgt en --data DIR --out runs/de-en
    attnkit train translate --src de --tgt en --data DIR --set data.max_tokens=4096 --set train.steps=2000

Defaults follow Vaswani et al. 2017: the base model (``--preset transformer-base``), a joint
BPE vocabulary learned on the training split (shared embeddings, tied output layer),
Adam(0.9, 0.98, 1e-9) with the Noam schedule, label smoothing 0.1, dropout 0.1, batches of
about ``data.max_tokens`` tokens grouped by length, validation every ``train.eval_every``
steps (loss, and BLEU on ``data.bleu_sentences`` sentences), the last ``data.average_last``
checkpoints averaged into ``OUT/model``, beam 4 with length penalty 0.6. Fewer steps than
the paper's 100k suit Multi30k-sized corpora: 6000 steps, and the Noam schedule reaches the
paper's peak learning rate (7e-4 for d_model=512) after 1000 warm-up steps instead of 4000
(``train.lr``, the Noam factor, is 0.5).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli.common import apply_overrides
from attnkit.errors import CheckpointError, ConfigError

DEFAULT_PRESET = "transformer-base"
DEFAULT_TRAIN = dict(
    steps=6000, warmup=1000, lr=0.5, schedule="noam", label_smoothing=0.1, eval_every=500, save_every=500,
    keep_checkpoints=5, log_every=50, metric="loss", metric_mode="min",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``attnkit train translate`` beyond the shared ones."""
    g = p.add_argument_group("translate")
    g.add_argument("--data", type=Path, help="corpus directory with SPLIT.LANG(.gz) files, e.g. train.de.gz train.en.gz val.de.gz ...")
    g.add_argument("--src", help="source language (the files' suffix), e.g. de")
    g.add_argument("--tgt", help="target language, e.g. en")
    g.add_argument("--vocab-size", type=int, help="joint subword vocabulary size (default 8000; also --set data.vocab_size=N)")


def build_configs(args: argparse.Namespace) -> dict[str, Any]:
    from attnkit.models.transformer import TransformerConfig, preset
    from attnkit.training.config import TrainConfig
    from attnkit.training.translation import TranslationConfig

    saved = args.out / "run_config.json"
    if args.resume:
        if not saved.is_file():
            raise CheckpointError(f"--resume: {saved} does not exist; nothing to resume in {args.out}")
        try:
            data = json.loads(saved.read_text())
            cfgs: dict[str, Any] = {
                "model": TransformerConfig.from_dict(data["model"]),
                "train": TrainConfig.from_dict(data["train"]),
                "data": TranslationConfig.from_dict(data["data"]),
            }
        except (json.JSONDecodeError, KeyError, TypeError, ConfigError) as e:
            raise CheckpointError(f"{saved} cannot be resumed from ({type(e).__name__}: {e}); the file is corrupt") from None
    else:
        try:
            model_cfg = TransformerConfig.load(args.config) if args.config is not None else preset(args.preset or DEFAULT_PRESET)
        except ConfigError:
            raise
        except ValueError as e:  # an unknown preset name
            raise ConfigError(str(e)) from None
        cfgs = {"model": model_cfg, "train": TrainConfig(**DEFAULT_TRAIN), "data": TranslationConfig()}
    cfgs = apply_overrides(args.set, cfgs)
    flags = {k: v for k, v in (("data", args.data), ("src", args.src), ("tgt", args.tgt), ("vocab_size", args.vocab_size)) if v is not None}
    if "data" in flags:
        flags["data"] = str(flags["data"])
    cfgs["data"] = cfgs["data"].replace(**flags)
    d = cfgs["data"]
    missing = [flag for flag, value in (("--data DIR", d.data), ("--src LANG", args.src or args.resume), ("--tgt LANG", args.tgt or args.resume)) if not value]
    if missing:
        raise ConfigError(f"attnkit train translate needs {', '.join(missing)} (e.g. --src de --tgt en --data data/multi30k)")
    return cfgs


def run(args: argparse.Namespace) -> int:
    from attnkit.training.translation import train_translation

    cfgs = build_configs(args)
    d = cfgs["data"]
    print(f"training {d.src}->{d.tgt} on {d.data} (vocabulary {d.vocab_size} {d.tokenizer}, ~{d.max_tokens} tokens per batch)")
    run_ = train_translation(cfgs["model"], cfgs["train"], d, args.out, resume=args.resume, progress=not args.no_progress)
    r = run_.result
    print(f"trained {r.step} steps in {r.seconds:.1f}s")
    steps = ", ".join(p.name for p in run_.averaged)
    scores = ", ".join(f"{k}={v:.4f}" if k == "loss" else f"{k}={v:.2f}" for k, v in run_.final.items())
    print(f"averaged {len(run_.averaged)} checkpoints ({steps}) into {run_.model_dir}; validation: {scores}")
    return 0
