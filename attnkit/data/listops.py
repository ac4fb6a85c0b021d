"""Long ListOps (Nangia & Bowman 2018; the Long Range Arena version of Tay et al. 2020, section 3.1).

An example is a nested expression over the digits 0-9 and four operators, written as tokens:

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]   ->   label 5

* ``MAX``, ``MIN``: the largest / smallest argument;
* ``MED``: the median; for an even number of arguments the mean of the two middle ones,
  rounded down (``int`` of the median);
* ``SM``: the sum modulo 10.

LRA's setting, the defaults here: at most 10 arguments per operator, depth at most 10, from
500 to 2000 tokens, 96,000 / 2,000 / 2,000 train / validation / test examples, 10 classes.
Generation is ours, written from that definition: a target length is drawn uniformly in the
allowed range and split recursively among 2-10 arguments, so lengths cover the range (the
published data set was generated differently and is not reproduced token for token).
Everything is deterministic in ``(seed, split)``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPERATORS = ("MAX", "MIN", "MED", "SM")
VOCAB = [str(d) for d in range(10)] + [f"[{op}" for op in OPERATORS] + ["]"]
SPLITS = {"train": 96_000, "validation": 2_000, "test": 2_000}


@dataclass(frozen=True, kw_only=True)
class ListOpsConfig:
    """The task's sizes (LRA's by default)."""

    max_depth: int = 10
    max_args: int = 10
    min_len: int = 500
    max_len: int = 2000

    def __post_init__(self) -> None:
        if self.max_depth < 1:
            raise ValueError(f"max_depth={self.max_depth} must be >= 1")
        if self.max_args < 2:
            raise ValueError(f"max_args={self.max_args} must be >= 2")
        if not 4 <= self.min_len <= self.max_len:
            raise ValueError(f"min_len={self.min_len}, max_len={self.max_len}: need 4 <= min_len <= max_len")


def apply(op: str, args: list[int]) -> int:
    """The value of one operator over its arguments."""
    if op == "MAX":
        return max(args)
    if op == "MIN":
        return min(args)
    if op == "MED":
        s = sorted(args)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
    if op == "SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}")


def evaluate(tokens: list[str]) -> int:
    """The value of a token sequence (raises ``ValueError`` if it is not a well-formed expression)."""
    stack: list[tuple[str, list[int]]] = []
    value = None
    for tok in tokens:
        if tok.startswith("["):
            stack.append((tok[1:], []))
        elif tok == "]":
            if not stack:
                raise ValueError("unbalanced ']'")
            op, args = stack.pop()
            v = apply(op, args)
            if stack:
                stack[-1][1].append(v)
            else:
                value = v
        elif tok.isdigit() and len(tok) == 1:
            if not stack:
                if value is not None or len(tokens) != 1:
                    raise ValueError("digits outside an operator")
                value = int(tok)
            else:
                stack[-1][1].append(int(tok))
        else:
            raise ValueError(f"unknown token {tok!r}")
    if stack or value is None:
        raise ValueError("unfinished expression")
    return value


def _tree(rng: random.Random, budget: int, depth: int, cfg: ListOpsConfig, out: list[str]) -> None:
    """Append an expression of at most ``budget`` tokens (close to it where depth allows)."""
    if budget < 4 or depth >= cfg.max_depth:  # "[OP a b ]" needs 4 tokens
        out.append(str(rng.randrange(10)))
        return
    n = rng.randint(2, min(cfg.max_args, budget - 2))
    cuts = sorted(rng.sample(range(1, budget - 2), n - 1))  # split budget - 2 into n positive parts
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, budget - 2])]
    out.append(f"[{rng.choice(OPERATORS)}")
    for part in parts:
        _tree(rng, part, depth + 1, cfg, out)
    out.append("]")


def generate(n: int, seed: int, split: str = "train", config: ListOpsConfig | None = None) -> list[tuple[list[str], int]]:
    """``n`` examples ``(tokens, label)`` of ``split``, deterministic in ``(seed, split)``."""
    cfg = config or ListOpsConfig()
    rng = random.Random(f"listops-{seed}-{split}")
    examples = []
    while len(examples) < n:
        tokens: list[str] = []
        _tree(rng, rng.randint(cfg.min_len, cfg.max_len), 0, cfg, tokens)
        if cfg.min_len <= len(tokens) <= cfg.max_len:  # depth limits can leave a tree short: draw again
            examples.append((tokens, evaluate(tokens)))
    return examples


# -- token ids and parallel generation --------------------------------------------------------
PAD_ID, CLS_ID = 0, 1
TOKEN_IDS = {tok: i + 2 for i, tok in enumerate(VOCAB)}  # 0 = padding, 1 = [CLS]
VOCAB_SIZE = len(VOCAB) + 2
SHARD = 1000  # examples per independently seeded shard


def _shard(args: tuple[int, int, str, int, ListOpsConfig]) -> tuple[bytes, list[int], list[int]]:
    """One shard, encoded: (token ids as bytes, lengths, labels). Runs in a worker process."""
    n, seed, split, index, cfg = args
    examples = generate(n, seed, f"{split}:{index}", cfg)
    flat = bytearray()
    for tokens, _ in examples:
        flat.extend(TOKEN_IDS[t] for t in tokens)
    return bytes(flat), [len(t) for t, _ in examples], [label for _, label in examples]


def generate_encoded(
    n: int, seed: int, split: str = "train", config: ListOpsConfig | None = None, *, workers: int = 1
) -> tuple[bytes, list[int], list[int]]:
    """``n`` examples as token ids: ``(all ids concatenated, one byte each; lengths; labels)``.

    The examples are the concatenation of shards of :data:`SHARD` examples, shard ``i`` being
    ``generate(SHARD, seed, f"{split}:{i}", config)`` (the last one shorter), so the result is
    the same for any number of ``workers`` (processes: generating LRA-length examples in pure
    Python is slow, so a full training split is worth spreading over cores).
    """
    cfg = config or ListOpsConfig()
    jobs = [(min(SHARD, n - s), seed, split, i, cfg) for i, s in enumerate(range(0, n, SHARD))]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp
        import sys

        torch = sys.modules.get("torch")
        # fork is fastest, but not after CUDA has started in this process
        method = "spawn" if torch is not None and torch.cuda.is_initialized() else "fork"
        with mp.get_context(method).Pool(min(workers, len(jobs))) as pool:
            parts = pool.map(_shard, jobs, chunksize=1)
    else:
        parts = [_shard(j) for j in jobs]
    return b"".join(p[0] for p in parts), [x for p in parts for x in p[1]], [y for p in parts for y in p[2]]
