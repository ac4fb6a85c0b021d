"""``attnkit data prepare --tokenizer TOK FILE... --out corpus.bin``: tokenise a corpus once into a memory-mapped token file.

The files are read one at a time, tokenised with TOK (a ``tokenizer.json``, or a model or run
directory holding one) and their ids written one after another to OUT as ``uint16`` (vocabularies
of at most 65,536 tokens) or ``uint32``, with a header ``OUT.json`` (dtype, token count,
vocabulary size, the tokenizer's path and SHA-256). Both are written beside their place and
renamed into it. ``attnkit train lm --set data.tokens=OUT`` trains on random windows of the file
without loading it (:mod:`attnkit.data.stream`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Iterator

from attnkit.cli.common import add_overwrite_argument, check_output_file
from attnkit.cli.helptext import plain
from attnkit.errors import DataError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("data", help="prepare training data (a memory-mapped token file)", description="attnkit data ACTION: prepare training data (attnkit data prepare --help).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    t = actions.add_parser("prepare", help="tokenise text files into a memory-mapped token file", description=plain(__doc__),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--tokenizer", type=Path, required=True, metavar="TOK", help="tokenizer.json, or a directory holding one (a trained model or run)")
    t.add_argument("--out", type=Path, required=True, help="token file to write (its header goes to OUT.json)")
    t.add_argument("files", type=Path, nargs="+", metavar="FILE", help="UTF-8 text files, tokenised one after another")
    add_overwrite_argument(t, "OUT")
    t.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.data.stream import header_path, write_token_file
    from attnkit.data.text import encode, read_text
    from attnkit.data.tokenizer import load_tokenizer

    tok_file = args.tokenizer / "tokenizer.json" if args.tokenizer.is_dir() else args.tokenizer
    tok = load_tokenizer(tok_file)
    if not args.out.parent.is_dir():
        raise DataError(f"cannot write {args.out}: directory {args.out.parent} does not exist")
    check_output_file(args.out, "--out", overwrite=args.overwrite)
    check_output_file(header_path(args.out), "--out", overwrite=args.overwrite)
    if any(f.resolve() == args.out.resolve() for f in args.files):
        raise DataError(f"--out {args.out} is also an input file; choose another --out")

    def documents() -> Iterator[list[int]]:
        for f in args.files:
            yield encode(tok, read_text(f), what=str(f))

    header = write_token_file(args.out, documents(), vocab_size=tok.get_vocab_size(), tokenizer=tok_file, files=[str(f) for f in args.files])
    print(f"wrote {args.out} ({header['count']:,} {header['dtype']} tokens from {len(args.files)} file(s)) and {header_path(args.out).name}")
    return 0
