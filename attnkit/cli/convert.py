"""``attnkit convert --to-hf SRC DST`` / ``--to-attnkit SRC DST``: change a GPT checkpoint's format.

``--to-hf`` writes a Hugging Face GPT-2 directory (config.json + model.safetensors) that
``transformers.GPT2LMHeadModel.from_pretrained(DST)`` loads; ``--to-attnkit`` writes an
attnkit directory. ``tokenizer.json`` is copied when SRC has one. ``attnkit.load`` reads
both formats, so SRC may be either.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from attnkit.errors import CheckpointError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert a GPT checkpoint to or from the Hugging Face format", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fmt = p.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--to-hf", action="store_true", help="write a Hugging Face GPT-2 directory")
    fmt.add_argument("--to-attnkit", action="store_true", help="write an attnkit checkpoint directory")
    p.add_argument("src", type=Path, help="checkpoint directory to read")
    p.add_argument("dst", type=Path, help="directory to write (replaced atomically)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.hub.gpt2 import save_hf_gpt2
    from attnkit.models.base import TOKENIZER_NAME, load
    from attnkit.models.gpt import GPT

    model = load(args.src)
    if not isinstance(model, GPT):
        raise CheckpointError(f"{args.src} holds a {type(model).__name__}; only GPT models convert to the GPT-2 format")
    if args.src.resolve() == args.dst.resolve():
        raise CheckpointError(f"source and destination are the same directory ({args.src}); choose another DST")
    tokenizer = args.src / TOKENIZER_NAME
    if args.to_hf:
        save_hf_gpt2(model, args.dst)
        if tokenizer.is_file():
            shutil.copy(tokenizer, args.dst / TOKENIZER_NAME)
    else:
        model.save_pretrained(args.dst, tokenizer=tokenizer if tokenizer.is_file() else None)
    print(f"wrote {args.dst} ({'Hugging Face GPT-2' if args.to_hf else 'attnkit'} format, {model.num_parameters():,} parameters)")
    return 0
