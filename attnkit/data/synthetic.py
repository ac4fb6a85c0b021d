"""Sequence-transduction tasks generated in-process: reversing, sorting and copying digit strings.

These are the classic sanity checks for sequence-to-sequence models (e.g. the copy
task of Graves et al. 2014 and the sorting task of Vinyals et al. 2015): the right
answer is known exactly, so exact-match accuracy on held-out strings measures whether
the model learned the algorithm rather than memorised examples.
"""

from __future__ import annotations

import random
from typing import Callable, Literal

from tokenizers import Tokenizer

from attnkit.data.seq2seq import PairDataset
from attnkit.data.tokenizer import char_tokenizer
from attnkit.errors import DataError

DIGITS = "0123456789"
TRANSFORMS: dict[str, Callable[[str], str]] = {
    "reverse": lambda s: s[::-1],
    "sort": lambda s: "".join(sorted(s)),
    "copy": lambda s: s,
}
SyntheticKind = Literal["reverse", "sort", "copy"]


def make_strings(n: int, min_len: int, max_len: int, seed: int, exclude: set[str] | None = None) -> list[str]:
    """``n`` distinct random digit strings with lengths in ``[min_len, max_len]``, none in ``exclude``."""
    if not 1 <= min_len <= max_len:
        raise DataError(f"need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    rng = random.Random(seed)
    exclude = exclude or set()
    seen: set[str] = set()
    out: list[str] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise DataError(f"cannot draw {n} distinct strings of length {min_len}..{max_len}; ask for fewer")
        s = "".join(rng.choice(DIGITS) for _ in range(rng.randint(min_len, max_len)))
        if s not in seen and s not in exclude:
            seen.add(s)
            out.append(s)
    return out


def synthetic_task(
    kind: str, *, n_train: int, n_valid: int, min_len: int = 3, max_len: int = 10, seed: int = 0, n_test: int = 0
) -> tuple[PairDataset, list[str], list[str], Tokenizer]:
    """Build ``(train dataset, held-out inputs, held-out answers, tokenizer)``; held-out strings never occur in training.

    The held-out list has ``n_valid + n_test`` strings: the caller keeps the last ``n_test`` apart as a test set."""
    if kind not in TRANSFORMS:
        raise DataError(f"unknown synthetic task {kind!r}; choose one of {', '.join(TRANSFORMS)}")
    f = TRANSFORMS[kind]
    tok = char_tokenizer(DIGITS)
    valid = make_strings(n_valid + n_test, min_len, max_len, seed + 1)
    train = make_strings(n_train, min_len, max_len, seed, exclude=set(valid))
    enc = lambda s: tok.encode(s).ids  # noqa: E731
    pairs = [(enc(s), enc(f(s))) for s in train]
    return PairDataset(pairs, name=f"{kind} training set"), valid, [f(s) for s in valid], tok


from dataclasses import dataclass  # noqa: E402

from attnkit.config import Config, check  # noqa: E402


MAX_CHARACTERS = 10**9  # digits of all generated strings together (n_train + n_valid + n_test) x max_len: a typo of 10^10 would fill the RAM


@dataclass(frozen=True, kw_only=True)
class SyntheticConfig(Config):
    """Which synthetic task to generate and how much of it.

    ``n_valid`` held-out strings choose the model during training; ``n_test`` more, also never
    seen in training, are scored once at the end.
    """

    kind: SyntheticKind = "reverse"
    n_train: int = 20000
    n_valid: int = 500
    n_test: int = 0
    min_len: int = 3
    max_len: int = 10
    seed: int = 0

    def validate(self) -> None:
        check(self.n_train >= 1, "n_train", self.n_train, "must be >= 1")
        check(self.n_valid >= 1, "n_valid", self.n_valid, "must be >= 1")
        check(self.n_test >= 0, "n_test", self.n_test, "must be >= 0")
        check(1 <= self.min_len <= self.max_len, "min_len", self.min_len, f"must be in [1, max_len={self.max_len}]")
        strings = self.n_train + self.n_valid + self.n_test
        key, value = ("max_len", self.max_len) if self.max_len > 10_000 else ("n_train", self.n_train)
        check(strings * self.max_len <= MAX_CHARACTERS, key, value,
              f"makes {strings:,} strings of up to {self.max_len:,} digits, above the limit of {MAX_CHARACTERS:,} digits in memory")

    def build(self) -> tuple[PairDataset, list[str], list[str], Tokenizer, tuple[list[str], list[str]]]:
        """``(train, validation inputs, validation answers, tokenizer, (test inputs, test answers))``."""
        train, held_in, held_out, tok = synthetic_task(self.kind, n_train=self.n_train, n_valid=self.n_valid, min_len=self.min_len,
                                                       max_len=self.max_len, seed=self.seed, n_test=self.n_test)
        v = self.n_valid
        return train, held_in[:v], held_out[:v], tok, (held_in[v:], held_out[v:])
