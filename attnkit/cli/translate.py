"""``attnkit translate``: translate sentences with a model trained by ``attnkit train translate``.

    attnkit translate --model runs/de-en/model "Ein Mann fährt Fahrrad."
    attnkit translate --model runs/de-en/model --input news.de --output news.en
    cat news.de | attnkit translate --model runs/de-en/model > news.en

Prints one detokenized translation per input line, in order. Decoding is batched beam
search over the KV cache (beam 4, length penalty 0.6 unless the model's translation.json
or --beam/--length-penalty say otherwise; --beam 1 is greedy). An empty input line gives
an empty output line. Inputs longer than the model's max_len tokens are truncated, and
their number is reported on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_overwrite_argument, check_output_file
from attnkit.cli.helptext import plain
from attnkit.errors import CheckpointError, ConfigError, DataError
from attnkit.io import atomic_write_text, read_utf8


def add_parser(sub: Any) -> None:
    p = sub.add_parser("translate", help="translate text with a trained model", description=plain(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", nargs="*", help="sentences to translate (default: read --input, or stdin)")
    add_model_arguments(p)
    p.add_argument("--input", "-i", type=Path, help="a file of sentences, one per line ('-' for stdin)")
    p.add_argument("--output", "-o", type=Path, help="write translations here instead of stdout (written once all are done)")
    add_overwrite_argument(p, "--output")
    p.set_defaults(run=run)


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``translate`` and ``eval translate``."""
    p.add_argument("--model", type=Path, required=True, help="model directory (OUT/model of attnkit train translate)")
    p.add_argument("--beam", type=int, help="beam size (default: the model's, else 4; 1 = greedy)")
    p.add_argument("--length-penalty", type=float, help="GNMT length penalty alpha (default: the model's, else 0.6)")
    p.add_argument("--batch-size", type=int, default=128, help="sentences decoded together (default: 128)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")


def load_translator(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The model (on its device, eval mode), its tokenizer and its decoding settings."""
    from attnkit.data.tokenizer import check_against_model, check_specials, load_tokenizer
    from attnkit.loading import load
    from attnkit.models.transformer import Transformer
    from attnkit.training.loop import pick_device
    from attnkit.training.translation import load_translation_info

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be at least 1")
    device = pick_device(args.device)
    model = load(args.model, map_location=device)  # refused before it is moved if the device's free memory cannot hold it
    if not isinstance(model, Transformer):
        raise CheckpointError(f"{args.model} holds a {type(model).__name__}; translation needs an encoder-decoder Transformer")
    tok = load_tokenizer(args.model)
    check_specials(tok)
    check_against_model(tok, model.config, str(args.model / "tokenizer.json"))
    info = load_translation_info(args.model)
    beam = args.beam if args.beam is not None else int(info.get("beam_size", 4))
    alpha = args.length_penalty if args.length_penalty is not None else float(info.get("length_penalty", 0.6))
    if beam < 1:
        raise ConfigError(f"--beam {beam} must be at least 1")
    if not alpha >= 0 or alpha == float("inf"):
        raise ConfigError(f"--length-penalty {alpha} must be a finite number >= 0")
    if beam > model.config.tgt_vocab_size:
        raise ConfigError(f"--beam {beam} is more than the model's {model.config.tgt_vocab_size} target tokens; "
                          f"use at most {model.config.tgt_vocab_size}")
    model = model.eval()
    return model, tok, {**info, "beam_size": beam, "length_penalty": alpha}


def read_input_lines(args: argparse.Namespace) -> list[str]:
    if args.text and args.input is not None:
        raise ConfigError("give sentences as arguments or --input FILE, not both")
    if args.text:
        return list(args.text)
    if args.input is not None and str(args.input) != "-":
        text = read_utf8(args.input, "input file")
    elif args.input is not None or not sys.stdin.isatty():
        text = sys.stdin.read()
    else:
        raise ConfigError("nothing to translate: give sentences as arguments, --input FILE, or pipe text on stdin")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def run(args: argparse.Namespace) -> int:
    from attnkit.training.translation import translate_lines

    if args.output is not None:
        check_output_file(args.output, "--output", overwrite=args.overwrite)
    lines = read_input_lines(args)
    model, tok, info = load_translator(args)
    outputs, truncated = translate_lines(
        model, tok, lines, beam_size=info["beam_size"], length_penalty=info["length_penalty"], batch_size=args.batch_size
    )
    if truncated:
        print(f"attnkit: warning: {truncated} input(s) longer than {model.config.max_len} tokens were truncated", file=sys.stderr)
    text = "".join(o + "\n" for o in outputs)
    if args.output is not None:
        try:  # a temporary file beside it, renamed over it when complete: a failure leaves the old file as it was
            atomic_write_text(args.output, text)
        except OSError as e:
            raise DataError(f"cannot write --output {args.output}: {e.strerror or e}; nothing was written") from None
    else:
        sys.stdout.write(text)
    return 0
