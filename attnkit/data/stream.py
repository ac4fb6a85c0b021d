"""Token corpora larger than memory: a memory-mapped token file, its random windows, and the LM task on it.

A corpus is tokenised once (``attnkit data prepare``) into two files:

* ``corpus.bin``: the token ids of every input file, one after another, as little-endian
  ``uint16`` (vocabularies of at most 65,536 tokens) or ``uint32``, nothing else (the layout
  of nanoGPT's ``train.bin``);
* ``corpus.bin.json``: the header, ``{"format", "dtype", "count", "vocab_size", "tokenizer",
  "tokenizer_sha256", "files"}``: the tokenizer's path and the SHA-256 of its JSON, so that a
  model is never trained on ids of another vocabulary.

:class:`TokenFile` maps the file with ``numpy.memmap``: the operating system pages in only the
windows read, so the corpus may exceed the memory. Training windows are ``context + 1`` tokens
at random offsets (the inputs and their next tokens). Batch ``i`` of epoch ``e`` draws its offsets
from a generator seeded by ``(seed, e, i)`` alone, so any batch can be produced without the ones
before it: a resumed run, or the process of rank ``r`` of ``P`` taking batches ``r, r + P, ...``,
sees exactly the windows of one straight run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from attnkit.data.lm import window_loss
from attnkit.data.transfer import to_device
from attnkit.errors import DataError
from attnkit.io import atomic_write, atomic_write_text
from attnkit.training.dev import dev_pass

FORMAT = "attnkit-tokens"


def header_path(path: str | os.PathLike) -> Path:
    """The header of token file ``path``: ``PATH.json``."""
    return Path(str(path) + ".json")


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` where every id fits (vocabularies up to 65,536 tokens), else ``uint32``."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def tokenizer_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a tokenizer file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_token_file(
    out: str | os.PathLike, documents: Iterable[list[int] | np.ndarray], *, vocab_size: int, tokenizer: str | os.PathLike, files: list[str]
) -> dict[str, Any]:
    """Write the ids of ``documents`` (each a list, one after another) to ``out`` and its header, atomically.

    The ids are written as they come (one document in memory at a time) to a temporary file
    beside ``out``, flushed and renamed; the header follows the same way, so a header always
    describes a complete token file.

    Args:
        out: the token file to write (``corpus.bin``).
        documents: the token ids of each document (lists or integer arrays).
        vocab_size: the tokenizer's vocabulary size (chooses the dtype; every id must be below it).
        tokenizer: the tokenizer file, recorded with its hash.
        files: the source files, recorded in the header.

    Returns:
        The header.
    """
    dtype = token_dtype(vocab_size)
    count = 0

    def write(tmp: str) -> None:
        nonlocal count
        with open(tmp, "wb") as f:
            for ids in documents:
                arr = np.asarray(ids, dtype=np.int64)
                if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
                    raise DataError(f"token id {int(arr.max())} is outside the tokenizer's vocabulary of {vocab_size}")
                f.write(arr.astype(dtype).tobytes())
                count += arr.size

    atomic_write(Path(out), write)
    header = {
        "format": FORMAT, "dtype": dtype.name, "count": count, "vocab_size": vocab_size,
        "tokenizer": str(Path(tokenizer).absolute()), "tokenizer_sha256": tokenizer_sha256(tokenizer), "files": files,
    }
    atomic_write_text(header_path(out), json.dumps(header, indent=2) + "\n")
    return header


class TokenFile:
    """A token file written by :func:`write_token_file`, memory-mapped (nothing is read up front).

    Args:
        path: the token file; its header is ``PATH.json``.

    Raises:
        DataError: the file or its header is missing, or they disagree (a truncated file).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        head = header_path(self.path)
        if not self.path.is_file() or not head.is_file():
            raise DataError(f"{self.path} is not a token file with its header {head.name}; write one with attnkit data prepare")
        try:
            self.header: dict[str, Any] = json.loads(head.read_text())
        except (ValueError, UnicodeDecodeError):
            raise DataError(f"{head} is not a JSON header of a token file") from None
        if self.header.get("format") != FORMAT:
            raise DataError(f"{head} is not the header of an attnkit token file")
        self.dtype = np.dtype(self.header["dtype"]).newbyteorder("<")
        self.count = int(self.header["count"])
        if self.path.stat().st_size != self.count * self.dtype.itemsize:
            raise DataError(f"{self.path} holds {self.path.stat().st_size} bytes, its header says {self.count} {self.header['dtype']} "
                            "tokens; the file is truncated or was rewritten without its header")
        self.tokens = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.count,)) if self.count else np.zeros(0, self.dtype)

    def __len__(self) -> int:
        return self.count

    def check_tokenizer(self, path: str | os.PathLike) -> None:
        """Refuse a tokenizer other than the one the ids were made with."""
        if tokenizer_sha256(path) != self.header.get("tokenizer_sha256"):
            raise DataError(f"{path} is not the tokenizer {self.path} was written with ({self.header.get('tokenizer')})")

    def read(self, start: int, stop: int) -> Tensor:
        """Tokens ``[start, stop)`` as an int64 tensor (only those pages are read)."""
        return torch.from_numpy(self.tokens[start:stop].astype(np.int64))

    def windows(self, starts: Tensor, length: int) -> Tensor:
        """The ``length``-token windows beginning at ``starts``: ``(B, length)`` int64."""
        return torch.stack([self.read(s, s + length) for s in starts.tolist()])


class TokenWindows:
    """Random training windows of ``context + 1`` tokens from the first ``limit`` tokens of a :class:`TokenFile`.

    Args:
        file: the token file.
        context: the model's context; windows are one token longer (inputs and next tokens).
        batch_size: windows per batch.
        limit: the windows lie in tokens ``[0, limit)`` (the training part); default all.
    """

    def __init__(self, file: TokenFile, *, context: int, batch_size: int, limit: int | None = None) -> None:
        self.file, self.context, self.batch_size = file, context, batch_size
        self.limit = len(file) if limit is None else limit
        if self.limit < context + 1:
            raise DataError(f"{file.path} has {self.limit} training tokens, fewer than one window of context + 1 = {context + 1}")

    def batches_per_epoch(self) -> int:
        """``limit // (batch_size * context)``: about one pass over the tokens (at least 1)."""
        return max(1, self.limit // (self.batch_size * self.context))

    def starts(self, seed: int, epoch: int, index: int) -> Tensor:
        """The window offsets of batch ``index`` of ``epoch``: ``(batch_size,)``, fixed by ``(seed, epoch, index)``."""
        g = torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_003 + index) % 2**63)
        return torch.randint(0, self.limit - self.context, (self.batch_size,), generator=g)  # (B,)

    def batch(self, starts: Tensor) -> Tensor:
        """The windows at ``starts``: ``(B, context + 1)``."""
        return self.file.windows(starts, self.context + 1)

    def batches(self, epoch: int, seed: int, *, rank: int = 0, world: int = 1) -> Iterator[Tensor]:
        """The windows of one epoch that process ``rank`` of ``world`` takes: batches ``rank, rank + world, ...``."""
        for i in range(rank, self.batches_per_epoch(), world):
            yield self.batch(self.starts(seed, epoch, i))


class StreamLMTask:
    """Next-token prediction on a token file, as :class:`~attnkit.data.lm.LMTask` does on tensors in memory.

    The first ``train_fraction`` of the tokens train and the rest validate. A training batch is
    the offsets of its windows (cheap to make); the windows are read from the file when the loss
    needs them, so a process reads only the batches it trains on. Evaluation reads at most
    ``max_eval_windows`` non-overlapping validation windows.

    Args:
        sample: ``model -> text`` run after each evaluation; its text is passed to ``log``.
        loss_chunk: > 0: the output layer and loss run that many tokens at a time
            (:func:`~attnkit.objectives.chunked_ce.head_loss`); 0: plain.
    """

    def __init__(
        self,
        file: TokenFile,
        *,
        context: int,
        batch_size: int,
        train_fraction: float = 0.9,
        device: torch.device | str = "cpu",
        sample: Callable[[nn.Module], str] | None = None,
        log: Callable[[str], None] = print,
        max_eval_windows: int = 4096,
        loss_chunk: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.loss_chunk = loss_chunk
        self.split = int(len(file) * train_fraction)
        self.train = TokenWindows(file, context=context, batch_size=batch_size, limit=self.split)
        if len(file) - self.split < context + 1:
            raise DataError(f"{file.path}: the validation part ({len(file) - self.split} tokens) is shorter than one window of {context + 1}")
        self.file, self.context, self.batch_size = file, context, batch_size
        self.sample, self.log, self.max_eval_windows = sample, log, max_eval_windows

    def batches(self, epoch: int, seed: int) -> Iterator[Tensor]:
        for i in range(self.train.batches_per_epoch()):
            yield self.train.starts(seed, epoch, i)  # (B,) offsets; read in loss()

    # DataLoader workers (attnkit.data.workers) read a batch's windows before the step; loss() takes them as they are
    def batch_count(self, epoch: int, seed: int) -> int:
        return self.train.batches_per_epoch()

    def make_batch(self, epoch: int, seed: int, index: int) -> Tensor:
        """The windows of batch ``index`` of :meth:`batches`: ``(B, T+1)`` on the CPU."""
        return self.train.batch(self.train.starts(seed, epoch, index))

    def on_device(self, windows: Tensor) -> Tensor:
        return to_device(windows, self.device)  # type: ignore[return-value]

    def input_tokens(self, starts: Tensor) -> int:
        return len(starts) * self.context  # (B,) offsets or (B, T+1) windows: B rows of T inputs

    def loss(self, model: nn.Module, starts: Tensor) -> tuple[Tensor, int]:
        # (B,) offsets, read here; or (B, T+1) windows a worker read
        batch = to_device(self.train.batch(starts), self.device) if starts.dim() == 1 else starts  # (B, T+1)
        return window_loss(model, batch, self.loss_chunk)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        n = min((len(self.file) - self.split - 1) // self.context, self.max_eval_windows)
        starts = self.split + torch.arange(n) * self.context  # (n,)

        def windows() -> Iterator[Tensor]:
            for i in range(0, n, self.batch_size):
                yield to_device(self.file.windows(starts[i : i + self.batch_size], self.context + 1), self.device)  # (b, T+1)

        result = {"loss": dev_pass(lambda w: window_loss(model, w, self.loss_chunk), windows()).loss}
        if self.sample is not None:
            self.log(self.sample(model))
        return result
