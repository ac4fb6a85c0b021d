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
    m = actions.add_parser("majority-documents", help="long classification documents made of SST-2 sentences, labelled by their majority",
                           description=plain(majority_documents.__doc__ or ""), formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--data-root", type=Path, required=True, metavar="DATA", help="holds sst2/train.tsv and sst2/dev.tsv")
    m.add_argument("--out", default="sst2-long", help="folder under DATA to write train.tsv and dev.tsv to (default sst2-long, "
                                                       "the folder of the sst2long-minilm-chunks recipe)")
    m.add_argument("--train-documents", type=int, default=4000)
    m.add_argument("--dev-documents", type=int, default=500)
    m.add_argument("--words", type=int, default=1500, help="words per document at least (default 1500: about 1,800 word pieces)")
    m.add_argument("--evidence", type=int, default=16, help="sentences by which the majority wins (default 16)")
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(run=majority_documents)


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


def majority_documents(args: argparse.Namespace) -> int:
    """``attnkit data majority-documents``: write DATA/OUT/train.tsv and dev.tsv, documents of SST-2 sentences whose label
    is the majority sentiment of their sentences, the deciding surplus in one stretch anywhere in the document
    (:mod:`attnkit.data.majority_documents`); ``attnkit finetune classify --recipe sst2long-minilm-chunks`` reads them."""
    from attnkit.data.majority_documents import build_sst2_documents

    try:
        paths = build_sst2_documents(args.data_root / "sst2", args.data_root / args.out, train_documents=args.train_documents,
                                     dev_documents=args.dev_documents, words=args.words, evidence=args.evidence, seed=args.seed)
    except ValueError as e:
        raise DataError(str(e)) from None
    print(f"wrote {paths['train']} ({args.train_documents} documents) and {paths['dev']} ({args.dev_documents})")
    return 0
