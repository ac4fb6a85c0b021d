"""``attnkit info DIR``: what a checkpoint holds (config and parameter counts by part)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.helptext import plain


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="describe a saved model", description=plain(__doc__))
    p.add_argument("path", type=Path, help="a checkpoint directory (config.json + model.safetensors)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import attnkit
    from attnkit.summary import format_breakdown, parameter_breakdown

    model = attnkit.load(args.path)
    cfg = model.config
    print(f"{args.path}: {type(model).__name__} ({model.model_type})")
    fields = cfg.to_dict()
    attn = fields.pop("attention", None)
    print("  " + ", ".join(f"{k}={v}" for k, v in sorted(fields.items())))
    if attn:
        print(f"  attention: {attn}")
    bd = parameter_breakdown(model)
    print(f"parameters: {bd['all']['total']:,}")
    print(format_breakdown(bd))
    tok = args.path / "tokenizer.json"
    print(f"tokenizer: {'tokenizer.json' if tok.is_file() else 'none'}")
    return 0
