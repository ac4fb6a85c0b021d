"""``attnkit peft merge``: fold a LoRA adapter into its base and save a plain model.

    attnkit peft merge runs/sst2-lora/model --out runs/sst2-lora-merged

The adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``, from ``attnkit
finetune --peft lora`` or from peft) names its base; ``--base DIR`` gives it when it lives
elsewhere. Each LoRA update ``(alpha / r) B A`` (DoRA: the rescaled direction) is added into its
weight in fp32; a QLoRA base is dequantized first, so the merged model computes what the adapter
was trained with. The output is an attnkit model directory (``attnkit convert --to-hf`` exports it).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.helptext import plain


def add_parser(sub: Any) -> None:
    p = sub.add_parser("peft", help="parameter-efficient adapters: merge a LoRA adapter into its base",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="peft_command", metavar="COMMAND")
    cmds.required = True
    m = cmds.add_parser("merge", help="write the base with a LoRA adapter merged into its weights", description=plain(__doc__),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("adapter", type=Path, metavar="ADAPTER_DIR", help="adapter directory (adapter_config.json + adapter_model.safetensors)")
    m.add_argument("--out", type=Path, required=True, help="directory for the merged model (must not exist)")
    m.add_argument("--base", type=Path, metavar="DIR", help="the base model's directory (default: the one the adapter names)")
    m.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.peft.files import merge_adapter

    out = merge_adapter(args.adapter, args.out, base=args.base)
    print(f"merged model saved to {out}")
    return 0
