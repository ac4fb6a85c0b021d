"""``attnkit average``: one model whose weights are the mean of several (checkpoint averaging, model soups).

    attnkit average runs/sst2-seed0/model runs/sst2-seed1/model runs/sst2-seed2/model --out runs/sst2-soup

Two uses of one operation:

* checkpoint averaging (Vaswani et al. 2017, section 6.1): the last checkpoints of one run;
* a uniform model soup (Wortsman et al. 2022, section 2): models fine-tuned from one pretrained
  checkpoint with different seeds or hyperparameters. Fine-tune the ingredients with the same
  ``train.init_seed`` (the default) so that their fresh heads start from the same weights.

The models must share one config (architecture, label set and label order; dropout rates may
differ). The mean is taken in float64, parameter by parameter. The output directory gets the
config, the tokenizer and any other file of the last model given (a translation model's language
pair, a sentence-transformers pooling config), and can be used wherever the inputs could
(``attnkit predict``, ``finetune --model``, ``convert``). Files are written to a temporary
directory first and then renamed, so an interrupted run leaves no half-written model.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from attnkit.cli.helptext import plain
from attnkit.errors import ConfigError
from attnkit.io import fsync_directory


def add_parser(sub: Any) -> None:
    p = sub.add_parser("average", help="average the weights of several models (checkpoint averaging, model soups)",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", type=Path, nargs="+", metavar="MODEL_DIR", help="model directories (config.json + model.safetensors)")
    p.add_argument("--out", type=Path, required=True, help="directory to write the averaged model to (must not exist)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.training.averaging import save_averaged

    paths: list[Path] = args.models
    if len(paths) < 2:
        raise ConfigError(f"average needs at least two model directories, got {len(paths)}")
    if len({p.resolve() for p in paths}) < len(paths):
        raise ConfigError("a model directory is given twice; each ingredient once (repeating one weights it twice)")
    for p in paths:
        if not p.is_dir():
            raise ConfigError(f"{p} is not a directory; pass model directories (each with config.json and model.safetensors)")
    out: Path = args.out
    if out.exists():
        raise ConfigError(f"{out} already exists; choose a new --out (nothing is overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))  # attnkit's own temporary name
    try:
        tmp = holder / out.name
        model = save_averaged(paths, tmp)
        written = {q.name for q in tmp.iterdir()}
        for extra in sorted(paths[-1].iterdir()):  # side files of the last model: language pair, pooling config, ...
            if extra.name in written or extra.name.endswith((".tmp", ".partial")):
                continue
            (shutil.copytree if extra.is_dir() else shutil.copy2)(extra, tmp / extra.name)
        tmp.rename(out)
        fsync_directory(out.parent)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    print(f"averaged {len(paths)} models ({type(model).__name__}, {model.num_parameters() / 1e6:.2f}M parameters) into {out}")
    return 0
