"""``attnkit viz``: figures of attention.

* ``attnkit viz attention --model DIR --text "..." [--pair "..."] --out attention.html [--png DIR] [--words]``:
  one self-contained HTML page (no network) with a head view, a model view and a matrix view of
  every layer and head, for a BERT-family model, a GPT or an encoder-decoder (encoder self-,
  decoder self- and cross-attention); ``--pair`` is a BERT sentence pair's second sentence or the
  encoder-decoder's target (default: its greedy translation); ``--words`` merges word pieces into
  words; ``--png DIR`` also writes the heatmaps as PNG images, one per layer.
* ``attnkit viz patterns --out DIR``: the pattern of every sparse and content-based kernel, one
  pixel per position (``NAME.png``) and enlarged (``NAME_x4.png``).
* ``attnkit viz positions --out DIR``: the sinusoidal table, similarity by distance, rotary and ALiBi.

An output file that exists is refused unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_overwrite_argument, check_output_file
from attnkit.cli.helptext import plain
from attnkit.errors import CheckpointError, ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("viz", help="figures of attention: a browser viewer, kernel patterns, positions",
                       description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    vs = p.add_subparsers(dest="figure", metavar="FIGURE")
    vs.required = True
    a = vs.add_parser("attention", help="an offline HTML viewer (and PNG heatmaps) of a model's attention on a text")
    a.add_argument("--model", type=Path, required=True, help="a model directory (attnkit, or Hugging Face GPT-2 / BERT family)")
    a.add_argument("--text", required=True, help="the text (the source sentence, for an encoder-decoder)")
    a.add_argument("--pair", default=None, help="BERT: the second sentence of a pair; encoder-decoder: the target")
    a.add_argument("--out", type=Path, default=Path("attention.html"), help="the HTML file to write (default: attention.html)")
    a.add_argument("--png", type=Path, default=None, help="also write PNG heatmaps into this directory")
    a.add_argument("--words", action="store_true", help="merge word pieces into words")
    a.add_argument("--tokenizer", type=Path, default=None, help="BERT family: tokenizer.json or vocab.txt (default: the one in --model)")
    a.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    add_overwrite_argument(a, "the HTML file and PNG images")
    a.set_defaults(run=run_attention)
    for name, what in (("patterns", "each sparse and content-based kernel's attention pattern"),
                       ("positions", "position encodings: sinusoidal table and similarity, rotary, ALiBi")):
        q = vs.add_parser(name, help=what)
        q.add_argument("--out", type=Path, required=True, help="the directory to write PNG images into")
        add_overwrite_argument(q, "images in --out")
        q.set_defaults(run=run_patterns if name == "patterns" else run_positions)


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    from attnkit.loading import load
    from attnkit.models.gpt import GPT
    from attnkit.models.transformer import Transformer

    model = load(args.model)
    if isinstance(model, (GPT, Transformer)):
        from attnkit.data.tokenizer import check_against_model, load_tokenizer

        if args.tokenizer is not None:
            raise ConfigError("--tokenizer is for BERT-family models; a GPT or encoder-decoder uses the tokenizer.json in --model")
        tok = load_tokenizer(args.model)
        check_against_model(tok, model.config, str(args.model / "tokenizer.json"))
        return model, tok
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.training.finetune import encoder_of

    try:
        enc = encoder_of(model)
    except CheckpointError:
        raise CheckpointError(f"{args.model} holds a {type(model).__name__}; viz attention reads BERT-family models, GPTs "
                              "and encoder-decoders") from None
    tok = WordPieceTokenizer.from_file(args.tokenizer or args.model, max_len=enc.config.max_len)
    tok.check_model(enc.config.vocab_size)
    return model, tok


def run_attention(args: argparse.Namespace) -> int:
    from attnkit.viz.attention import groups_for_text
    from attnkit.viz.heatmap import write_heatmaps
    from attnkit.viz.html import write

    check_output_file(args.out, "--out", overwrite=args.overwrite)
    model, tok = _load(args)
    model = model.to(args.device)
    groups = groups_for_text(model, tok, args.text, args.pair, words=args.words)
    if args.png is not None:
        _check_new(args.png, [f"{g.name}_layer{n}.png" for g in groups for n in range(len(g.layers))], args.overwrite)
    write(args.out, groups, title=f"Attention of {args.model.name}")
    print(f"wrote {args.out}")
    if args.png is not None:
        files = write_heatmaps(groups, args.png)
        print(f"wrote {len(files)} PNG images to {args.png}")
    return 0


def _check_new(folder: Path, names: list[str], overwrite: bool) -> None:
    """Refuse a folder that is a file, or one holding any of ``names``, unless ``overwrite``."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; give a directory for the images")
    there = [n for n in names if (folder / n).exists()]
    if there and not overwrite:
        raise ConfigError(f"{folder / there[0]} exists ({len(there)} of the images do); add --overwrite to replace them, "
                          "or choose another directory")


def run_patterns(args: argparse.Namespace) -> int:
    from attnkit.viz.patterns import PATTERNS, write_patterns

    _check_new(args.out, [f"{n}{x}.png" for n in PATTERNS for x in ("", "_x4")] + ["overview.png"], args.overwrite)
    files = write_patterns(args.out)
    print(f"wrote {len(files)} images to {args.out}")
    return 0


def run_positions(args: argparse.Namespace) -> int:
    from attnkit.viz.positions import FIGURES, write_positions

    _check_new(args.out, list(FIGURES), args.overwrite)
    files = write_positions(args.out)
    print(f"wrote {len(files)} images to {args.out}")
    return 0
