"""``attnkit chat --model DIR``: talk with a dialogue model trained by ``attnkit train dialogue``.

At a terminal each line you type is your turn and the model answers; an empty line or Ctrl-D
ends the session. With ``--input FILE`` (or lines piped on stdin) each line is a turn and each
reply is printed on a line of its own, for scripts and tests; with ``--seed`` the replies are the
same at every run.

The history is cut to the context: the most recent whole turns that fit with room for the reply
(``--max-new-tokens``), at most ``--max-turns`` of them. Replies are sampled (``--temperature``,
``--top-k``, ``--top-p``; ``--temperature 0`` is greedy) after two adjustments against
repetition: ``--repetition-penalty`` above 1 makes tokens already in the history or the reply
less likely (CTRL's penalty) and ``--no-repeat-ngram-size N`` forbids repeating any N-gram of
them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator

from attnkit.cli.helptext import plain
from attnkit.errors import ConfigError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("chat", help="talk with a dialogue model (attnkit train dialogue)", description=plain(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="a dialogue model directory (OUT/model of attnkit train dialogue)")
    p.add_argument("--input", type=Path, metavar="FILE", help="a file of user turns, one a line (non-interactive); default: the terminal or stdin")
    p.add_argument("--max-turns", type=int, default=None, metavar="N", help="keep at most this many turns of history (default: all that fit)")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N", help="tokens of a reply at most (default: 64; at most half the context)")
    p.add_argument("--temperature", type=float, default=0.8, metavar="T", help="softmax temperature; 0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=0.9, metavar="P", help="nucleus sampling, p in (0, 1] (default: 0.9)")
    p.add_argument("--repetition-penalty", type=float, default=1.2, metavar="X", help="> 1 discourages repeated tokens; 1 = none (default: 1.2)")
    p.add_argument("--no-repeat-ngram-size", type=int, default=3, metavar="N", help="forbid repeating any n-gram of this size; 0 = none (default: 3)")
    p.add_argument("--seed", type=int, default=None, metavar="N", help="random seed of the sampling (same seed, same replies)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.set_defaults(run=run)


def user_turns(args: argparse.Namespace) -> tuple[Iterator[str], bool]:
    """The user's lines and whether the session is interactive (a terminal on stdin, no --input)."""
    if args.input is not None:
        from attnkit.io import read_utf8

        return iter(read_utf8(args.input).splitlines()), False
    if sys.stdin.isatty():
        def ask() -> Iterator[str]:
            while True:
                try:
                    line = input("you> ")
                except EOFError:
                    return
                if not line.strip():
                    return
                yield line

        return ask(), True
    return (line.rstrip("\n") for line in sys.stdin), False


def run(args: argparse.Namespace) -> int:
    import attnkit
    from attnkit.data.tokenizer import load_tokenizer
    from attnkit.generation.sampling import SamplingConfig
    from attnkit.models.gpt import GPT
    from attnkit.training.dialogue import Chat
    from attnkit.training.loop import pick_device

    if args.max_turns is not None and args.max_turns < 1:
        raise ConfigError(f"--max-turns {args.max_turns} must be >= 1")
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              seed=args.seed, repetition_penalty=args.repetition_penalty, no_repeat_ngram_size=args.no_repeat_ngram_size)
    model = attnkit.load(args.model)
    if not isinstance(model, GPT):
        raise ConfigError(f"{args.model} holds a {type(model).__name__}; chat needs the GPT of attnkit train dialogue")
    model.to(pick_device(args.device, what="--device")).eval()
    chat = Chat(model, load_tokenizer(args.model / "tokenizer.json"), sampling, max_turns=args.max_turns)
    turns, interactive = user_turns(args)
    for line in turns:
        if not interactive and not line.strip():
            continue
        answer = " ".join(chat.reply(line).split())  # one reply, one line
        print(f"bot> {answer}" if interactive else answer, flush=True)
    return 0
