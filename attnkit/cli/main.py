"""The attnkit command line: demo, recipes, train, finetune, generate, translate, eval, predict, convert, average, info (--help on each).

User mistakes (missing files, bad config keys or values, corrupt checkpoints) print one
line, ``attnkit: error: ...``, and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from attnkit.errors import AttnkitError


def build_parser() -> argparse.ArgumentParser:
    from attnkit.cli import average, bench, convert, data, demo, evaluate, finetune, generate, info, peft, predict, recipes, tokenizer, train, translate, viz

    parser = argparse.ArgumentParser(
        prog="attnkit",
        description="attnkit: Transformers from 'Attention Is All You Need' onwards, in readable PyTorch.",
    )
    parser.add_argument("--version", action="version", version=f"attnkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from attnkit.cli import chat

    for module in (demo, recipes, train, generate, convert, average, info, bench, translate, evaluate, tokenizer, data, finetune, predict, peft, viz, chat):
        module.add_parser(sub)
    return parser


def _version() -> str:
    from attnkit import __version__

    return __version__


# errors of the file system a user can cause (a full disk, a read-only mount, a path too long), not bugs
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP, errno.EACCES, errno.EPERM}


def main(argv: list[str] | None = None) -> int:
    """Run one command; a user's mistake prints one line and returns 2 (see :func:`user_error`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _closed_pipe()
    except KeyboardInterrupt:
        print("attnkit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        message = user_error(e)
        if message is None:
            raise  # a bug: the traceback must be seen
        print(f"attnkit: error: {message}", file=sys.stderr)
        return 2


def user_error(e: BaseException) -> str | None:
    """The one-line message for an exception a user can cause, or None for one that is a bug.

    Args:
        e: the exception a command raised.

    Returns:
        The message (without the ``attnkit: error:`` prefix), or None.
    """
    if isinstance(e, AttnkitError):
        return str(e)
    if _out_of_memory(e):
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        return (f"out of memory ({first}); lower the batch size (--batch-size, train.batch_size), "
                "the sequence length or the model size")
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" writing {e.filename}" if e.filename else ""
        return f"no space left on device{where}; free space or choose another --out"
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)) or (
        isinstance(e, OSError) and e.errno in USER_ERRNOS
    ):
        return f"{e.strerror}: {e.filename}" if e.filename else str(e.strerror or e)
    return None


def _out_of_memory(e: BaseException) -> bool:
    """An allocation the machine refused: Python's MemoryError, torch's out-of-memory error on an accelerator,
    or the CPU allocator's ``RuntimeError`` (a batch or beam sized past the memory; the size guards catch the model's own)."""
    import torch

    if isinstance(e, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(e, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(e)


def _closed_pipe() -> int:
    """The reader of stdout went away (``attnkit info X | head -1``): stop quietly, as a Unix tool does.

    stdout is pointed at the null device so that the interpreter's final flush does not fail a
    second time; the status is 128 + SIGPIPE.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    return 128 + 13


if __name__ == "__main__":
    sys.exit(main())
