"""``attnkit tokenizer train --kind wordpiece|bpe|unigram --vocab-size N --out FILE TEXT...``: learn a vocabulary.

``wordpiece`` is BERT's (:mod:`attnkit.data.wordpiece`: [PAD] [UNK] [CLS] [SEP] [MASK] at ids
0-4, BERT normalisation, lower-cased unless ``--cased``); ``bpe`` and ``unigram`` are the
subword tokenizers of :mod:`attnkit.data.subword` (<pad> <s> </s> <unk> at ids 0-3). The
result is one ``tokenizer.json`` that ``tokenizers.Tokenizer.from_file`` and attnkit load; an
existing OUT is replaced only with ``--overwrite``, and only once the new file is complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_overwrite_argument, check_output_file
from attnkit.cli.helptext import plain
from attnkit.data.tokenizer import check_vocab_size
from attnkit.errors import DataError
from attnkit.io import atomic_write, read_utf8


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tokenizer", help="train a WordPiece, BPE or unigram tokenizer", description="attnkit tokenizer ACTION: build tokenizers (attnkit tokenizer train --help).",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    t = actions.add_parser("train", help="learn a vocabulary from text files", description=plain(__doc__),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--kind", choices=("wordpiece", "bpe", "unigram"), default="wordpiece",
                   help="wordpiece (BERT), bpe (byte-pair encoding) or unigram (default: wordpiece)")
    t.add_argument("--vocab-size", type=int, required=True, help="number of tokens, special tokens included")
    t.add_argument("--cased", action="store_true", help="wordpiece: keep case and accents (default: lower-case, strip accents)")
    t.add_argument("--out", type=Path, required=True, help="tokenizer.json to write (a directory gets OUT/tokenizer.json)")
    t.add_argument("files", type=Path, nargs="+", help="training text, one sentence or document per line")
    add_overwrite_argument(t, "OUT")
    t.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    out = args.out / "tokenizer.json" if args.out.is_dir() else args.out
    if not out.parent.is_dir():
        raise DataError(f"cannot write {out}: directory {out.parent} does not exist")
    check_output_file(out, "--out", overwrite=args.overwrite)
    if any(f.resolve() == out.resolve() for f in args.files):
        raise DataError(f"--out {out} is also a training text file; choose another --out")
    check_vocab_size(args.vocab_size, what="--vocab-size")
    texts = [read_utf8(f, "training text") for f in args.files]  # missing or not UTF-8: refused, as train lm does
    if args.kind == "wordpiece":
        from attnkit.data.wordpiece import WordPieceTokenizer

        tok = WordPieceTokenizer.train(args.files, args.vocab_size, lowercase=not args.cased)
        atomic_write(out, tok.save)
        size = tok.vocab_size
    else:
        from attnkit.data.subword import train_subword_tokenizer

        lines = [line for text in texts for line in text.splitlines()]
        learned = train_subword_tokenizer(lines, args.vocab_size, args.kind)
        atomic_write(out, learned.save)
        size = learned.get_vocab_size()
    print(f"wrote {out} ({args.kind}, {size:,} tokens)")
    return 0
