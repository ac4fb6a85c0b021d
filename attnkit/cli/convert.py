"""``attnkit convert --to-hf SRC DST`` / ``--to-attnkit SRC DST``: change a checkpoint's format.

``--to-hf`` writes a Hugging Face directory (config.json + model.safetensors): a GPT model
as GPT-2 (``transformers.GPT2LMHeadModel.from_pretrained(DST)`` loads it), a BERT-family
model (encoder or head) as ``--family bert|roberta|albert|electra`` (default: bert; the
matching ``transformers`` class, e.g. ``BertForSequenceClassification``, loads it).
``--to-attnkit`` writes an attnkit directory. ``tokenizer.json`` is copied when SRC has one.
``attnkit.load`` reads both formats, so SRC may be either.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from attnkit.cli.helptext import plain
from attnkit.errors import CheckpointError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert a GPT or BERT-family checkpoint to or from the Hugging Face format", description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    fmt = p.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--to-hf", action="store_true", help="write a Hugging Face directory (GPT-2, or the BERT family's --family)")
    fmt.add_argument("--to-attnkit", action="store_true", help="write an attnkit checkpoint directory")
    p.add_argument("--family", choices=("bert", "roberta", "albert", "electra"), default=None,
                   help="Hugging Face family of a BERT-family model (default: bert; roberta/albert/electra per its options)")
    p.add_argument("src", type=Path, help="checkpoint directory to read")
    p.add_argument("dst", type=Path, help="directory to write (replaced atomically)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.hub.bert import HEADS, save_hf_bert
    from attnkit.hub.gpt2 import save_hf_gpt2
    from attnkit.loading import load
    from attnkit.models.base import TOKENIZER_NAME
    from attnkit.models.gpt import GPT

    model = load(args.src)
    is_bert = type(model) in HEADS.values()
    if not isinstance(model, GPT) and not is_bert:
        raise CheckpointError(f"{args.src} holds a {type(model).__name__}; only GPT and BERT-family models convert to the Hugging Face format")
    if args.src.resolve() == args.dst.resolve():
        raise CheckpointError(f"source and destination are the same directory ({args.src}); choose another DST")
    tokenizer = args.src / TOKENIZER_NAME
    if args.to_hf and is_bert:
        save_hf_bert(model, args.dst, family=args.family or _family(model))
        if tokenizer.is_file():
            shutil.copy(tokenizer, args.dst / TOKENIZER_NAME)
    elif args.to_hf:
        save_hf_gpt2(model, args.dst)
        if tokenizer.is_file():
            shutil.copy(tokenizer, args.dst / TOKENIZER_NAME)
    else:
        model.save_pretrained(args.dst, tokenizer=tokenizer if tokenizer.is_file() else None)
    fmt = f"Hugging Face {(args.family or _family(model)) if is_bert else 'GPT-2'}" if args.to_hf else "attnkit"
    print(f"wrote {args.dst} ({fmt} format, {model.num_parameters():,} parameters)")
    return 0


def _family(model: Any) -> str:
    """The Hugging Face family a BERT-family model's options point to."""
    c = getattr(model.config, "encoder", model.config)
    if c.share_layers:
        return "albert"
    if c.positions == "after_pad":
        return "roberta"
    return "electra" if c.d_embed is not None or type(model).__name__ == "ElectraDiscriminator" else "bert"
