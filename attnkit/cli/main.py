"""The attnkit command line: demo, recipes, train, finetune, generate, translate, eval, predict, convert, average, info (--help on each).

User mistakes (missing files, bad config keys or values, corrupt checkpoints) print one
line, ``attnkit: error: ...``, and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys

from attnkit.errors import AttnkitError


def build_parser() -> argparse.ArgumentParser:
    from attnkit.cli import average, bench, convert, demo, evaluate, finetune, generate, info, predict, recipes, tokenizer, train, translate

    parser = argparse.ArgumentParser(
        prog="attnkit",
        description="attnkit: Transformers from 'Attention Is All You Need' onwards, in readable PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"attnkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in (demo, recipes, train, generate, convert, average, info, bench, translate, evaluate, tokenizer, finetune, predict):
        module.add_parser(sub)
    return parser


def _version() -> str:
    from attnkit import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except AttnkitError as e:
        print(f"attnkit: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        print(f"attnkit: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
