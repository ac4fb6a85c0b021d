"""``attnkit convert --to-hf SRC DST`` / ``--to-attnkit SRC DST``: change a checkpoint's format.

``--to-hf`` writes a Hugging Face directory (config.json + model.safetensors): a GPT model
as GPT-2 (``transformers.GPT2LMHeadModel.from_pretrained(DST)`` loads it), a GPT with rotary
positions (the Llama family) as Llama, Mistral (with a sliding window) or Qwen2 (q/k/v biases only)
(``LlamaForCausalLM`` and its siblings load it), a BERT-family
model (encoder or head) as ``--family bert|roberta|albert|electra`` (default: bert; the
matching ``transformers`` class, e.g. ``BertForSequenceClassification``, loads it).
``--to-attnkit`` writes an attnkit directory. ``tokenizer.json`` is copied when SRC has one.
``attnkit.load`` reads both formats, so SRC may be either.

DST is written beside its final place and renamed in when complete. A DST that exists and is
not empty is refused, unless it is a model directory of the kind being written (config.json,
model.safetensors and tokenizer.json, nothing else) and --overwrite is given; a DST that is
SRC, contains it or lies inside it is always refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.helptext import plain
from attnkit.errors import CheckpointError

CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_NAME = "config.json", "model.safetensors", "tokenizer.json"  # as attnkit.models.base names them


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert a GPT or BERT-family checkpoint to or from the Hugging Face format", description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    fmt = p.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--to-hf", action="store_true", help="write a Hugging Face directory (GPT-2, or the BERT family's --family)")
    fmt.add_argument("--to-attnkit", action="store_true", help="write an attnkit checkpoint directory")
    p.add_argument("--family", choices=("bert", "roberta", "albert", "electra"), default=None,
                   help="Hugging Face family of a BERT-family model (default: bert; roberta/albert/electra per its options)")
    p.add_argument("src", type=Path, help="checkpoint directory to read")
    p.add_argument("dst", type=Path, help="directory to write (new or empty; see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a DST that holds a model directory of the kind being written")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.hub.bert import HEADS, save_hf_bert
    from attnkit.hub.gpt2 import save_hf_gpt2
    from attnkit.hub.llama import family_of, save_hf_llama
    from attnkit.loading import load
    from attnkit.models.gpt import GPT

    check_destination(args.src, args.dst, hf=args.to_hf, overwrite=args.overwrite)
    model = load(args.src)
    is_bert = type(model) in HEADS.values()
    if not isinstance(model, GPT) and not is_bert:
        raise CheckpointError(f"{args.src} holds a {type(model).__name__}; only GPT and BERT-family models convert to the Hugging Face format")
    if args.family is not None and not (args.to_hf and is_bert):
        raise CheckpointError(f"--family {args.family} names a Hugging Face BERT family; {args.src} holds a {type(model).__name__}"
                              f"{'' if args.to_hf else ' and --to-attnkit writes no family'}; leave out --family")
    tokenizer = args.src / TOKENIZER_NAME if (args.src / TOKENIZER_NAME).is_file() else None
    try:
        if args.to_hf and is_bert:
            save_hf_bert(model, args.dst, family=args.family or _family(model), tokenizer=tokenizer)
        elif args.to_hf and not model.config.learned_positions:  # the Llama family
            save_hf_llama(model, args.dst, tokenizer=tokenizer)
        elif args.to_hf:
            save_hf_gpt2(model, args.dst, tokenizer=tokenizer)
        else:
            model.save_pretrained(args.dst, tokenizer=tokenizer)
    except OSError as e:
        raise CheckpointError(f"cannot write {args.dst}: {e.strerror or e}; DST was left as it was") from None
    gpt_family = family_of(model.config) if not is_bert and not model.config.learned_positions else "GPT-2"
    fmt = f"Hugging Face {(args.family or _family(model)) if is_bert else gpt_family}" if args.to_hf else "attnkit"
    print(f"wrote {args.dst} ({fmt} format, {model.num_parameters():,} parameters)")
    return 0


MODEL_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_NAME})


def check_destination(src: Path, dst: Path, *, hf: bool, overwrite: bool) -> None:
    """Refuse a DST whose replacement would delete anything but a model directory of the kind being written.

    Args:
        src: the directory read.
        dst: the directory to write.
        hf: a Hugging Face directory is written (else an attnkit one).
        overwrite: the user asked to replace an existing model directory of that kind.
    """
    s, d = src.resolve(), dst.resolve()
    if d == s:
        raise CheckpointError(f"source and destination are the same directory ({src}); choose another DST")
    if d in s.parents:
        raise CheckpointError(f"DST {dst} contains SRC {src}; writing it would delete the source; choose another DST")
    if s in d.parents:
        raise CheckpointError(f"DST {dst} lies inside SRC {src}; a model directory holds only its own files; choose a DST outside it")
    if not dst.exists() and not dst.is_symlink():
        return
    if not dst.is_dir() or dst.is_symlink():
        raise CheckpointError(f"DST {dst} exists and is not a directory; choose another DST")
    names = {p.name for p in dst.iterdir()}
    if not names:
        return
    kind = "Hugging Face" if hf else "attnkit"
    a_kind = "a Hugging Face" if hf else "an attnkit"
    if not names <= MODEL_FILES or not {CONFIG_NAME, WEIGHTS_NAME} <= names or _kind(dst) != kind:
        raise CheckpointError(f"DST {dst} is not empty and is not {a_kind} model directory; choose a new or empty DST")
    if not overwrite:
        raise CheckpointError(f"DST {dst} holds {a_kind} model; add --overwrite to replace it, or choose another DST")


def _kind(path: Path) -> str | None:
    """``"Hugging Face"`` or ``"attnkit"`` for a model directory's config.json, else None."""
    import json

    from attnkit.models.base import model_types

    try:
        data = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("model_type") in model_types():
        return "attnkit"
    if data.get("model_type") in HF_TYPES or "architectures" in data:
        return "Hugging Face"
    return None


HF_TYPES = ("gpt2", "bert", "roberta", "albert", "electra", "llama", "mistral", "qwen2")


def _family(model: Any) -> str:
    """The Hugging Face family a BERT-family model's options point to."""
    c = getattr(model.config, "encoder", model.config)
    if c.share_layers:
        return "albert"
    if c.positions == "after_pad":
        return "roberta"
    return "electra" if c.d_embed is not None or type(model).__name__ == "ElectraDiscriminator" else "bert"
