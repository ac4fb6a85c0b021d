"""Masked-LM pretraining on a token file larger than memory: random windows, masked as they are read.

A WordPiece corpus written by ``attnkit data prepare`` (:mod:`attnkit.data.stream`) is read in
windows of ``max_seq_len - 2`` tokens at random offsets, each laid out as ``[CLS] window [SEP]``:
RoBERTa's FULL-SENTENCES input (Liu et al. 2019, section 4.2), contiguous text that may cross a
document boundary (the [SEP] [CLS] the tokenizer puts around each file stays in the window and
is never masked), without a sentence-pair task. Masking is dynamic (section 4.1): each batch is
masked when it is made (:func:`attnkit.objectives.mlm.mask_tokens`, BERT's 15% with 80/10/10,
whole-word or span masking as configured) with a generator fixed by ``(seed, epoch, batch)``, so
any batch is produced without the ones before it (a resumed run, or one process of several).

Words for whole-word and span masking: a WordPiece token that begins with the continuation
prefix ``##`` continues the word before it; any other token begins a word.

The last ``valid_fraction`` of the tokens is held out: non-overlapping windows with fixed masks,
scored as :class:`~attnkit.training.mlm.PretrainingTask` scores its held-out pairs.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from attnkit.data.pretraining import PretrainingBatch
from attnkit.data.stream import TokenFile, TokenWindows
from attnkit.errors import DataError
from attnkit.objectives.mlm import MaskingConfig
from attnkit.training.mlm import PretrainingTask, mask_batch

CONTINUATION = "##"


def continuation_table(tokenizer: Any) -> Tensor:
    """``(V,)`` bool: True for the ids of word-continuing pieces (``##...``) of a WordPiece vocabulary."""
    table = torch.zeros(tokenizer.vocab_size, dtype=torch.bool)
    for token, i in tokenizer.tokenizer.get_vocab().items():
        if token.startswith(CONTINUATION):
            table[i] = True
    return table


class StreamMLMTask(PretrainingTask):
    """Masked LM alone on ``[CLS] window [SEP]`` rows read from a :class:`~attnkit.data.stream.TokenFile`.

    A training batch is the window offsets (cheap to make); the windows are read and masked in
    :meth:`loss`, so a process reads only its own batches. The loss, ``input_tokens`` and the
    evaluation are :class:`~attnkit.training.mlm.PretrainingTask`'s with ``pair_task="none"``.

    Args:
        file: the token file (ids of ``tokenizer``).
        tokenizer: a :class:`~attnkit.data.wordpiece.WordPieceTokenizer` with [MASK].
        max_seq_len: the row length, [CLS] and [SEP] included.
        batch_size: rows per batch.
        masking: the masking proportions.
        valid_fraction: the held-out tail of the tokens.
        max_eval_windows: held-out windows scored at most.
        log: where evaluation results are printed.
    """

    varying_lengths = False  # every row is max_seq_len

    def __init__(
        self,
        file: TokenFile,
        *,
        tokenizer: Any,
        max_seq_len: int,
        batch_size: int,
        masking: MaskingConfig = MaskingConfig(),
        valid_fraction: float = 0.05,
        max_eval_windows: int = 2048,
        device: torch.device | str = "cpu",
        log: Callable[[str], None] = print,
    ) -> None:
        if tokenizer.mask_id is None:
            raise DataError("the tokenizer has no [MASK] token; masked-LM pretraining needs one")
        self.file, self.tok, self.max_seq_len, self.batch_size = file, tokenizer, max_seq_len, batch_size
        self.pair_task, self.masking, self.device, self.log = "none", masking, torch.device(device), log
        self.random_ids = tokenizer.random_ids()  # (N,)
        self.special_ids = tokenizer.special_ids
        self.specials = torch.tensor(self.special_ids, dtype=torch.long)
        self.continues = continuation_table(tokenizer)  # (V,)
        self.window = max_seq_len - 2
        self.split = int(len(file) * (1.0 - valid_fraction))
        self.train = TokenWindows(file, context=self.window - 1, batch_size=batch_size, limit=self.split)  # windows of `window` ids
        n_valid = min((len(file) - self.split) // self.window, max_eval_windows)
        if n_valid < 1:
            raise DataError(f"{file.path}: the held-out part ({len(file) - self.split} tokens) is shorter than one window of "
                            f"{self.window}; raise --set data.valid_fraction")
        self.valid_starts = self.split + torch.arange(n_valid) * self.window  # (n,)
        self.valid_pairs = range(n_valid)  # what PretrainingTask.evaluate counts on
        self._eval_batches: list[PretrainingBatch] | None = None

    # -- data -----------------------------------------------------------------------------------
    def rows(self, starts: Tensor) -> PretrainingBatch:
        """The unmasked ``[CLS] window [SEP]`` rows of the windows at ``starts``: ``(B, max_seq_len)``."""
        w = self.file.windows(starts, self.window)  # (B, W)
        b = len(starts)
        ids = torch.cat([torch.full((b, 1), self.tok.cls_id), w, torch.full((b, 1), self.tok.sep_id)], dim=1)  # (B, T)
        maskable = ~torch.isin(ids, self.specials)  # (B, T)
        begins = ~self.continues[ids] | ~maskable  # a special counts as a word of its own
        word_index = torch.cumsum(begins.long(), dim=1) - 1  # (B, T)
        ones = torch.ones_like(ids)
        return PretrainingBatch(ids, torch.zeros_like(ids), ones, maskable, word_index, None)

    def masked(self, starts: Tensor, generator: torch.Generator) -> PretrainingBatch:
        """:meth:`rows` with masked-LM masking drawn from ``generator``, and the prediction slots the output layer runs at."""
        return mask_batch(self.rows(starts), self.masking, mask_id=self.tok.mask_id, random_ids=self.random_ids, generator=generator,
                          slots=self.gathers_predictions)

    def batches(self, epoch: int, seed: int) -> Iterator[tuple[Tensor, int]]:  # type: ignore[override]
        for i in range(self.train.batches_per_epoch()):
            yield self.train.starts(seed, epoch, i), (seed * 1_000_003 + epoch) * 100_003 + i  # offsets and the mask seed

    def _read(self, item: tuple[Tensor, int]) -> PretrainingBatch:
        starts, mask_seed = item
        return self.masked(starts, torch.Generator().manual_seed(mask_seed)).to(self.device)

    # DataLoader workers (attnkit.data.workers) read and mask a batch before the step; loss() takes it as it is
    def batch_count(self, epoch: int, seed: int) -> int:
        return self.train.batches_per_epoch()

    def make_batch(self, epoch: int, seed: int, index: int) -> PretrainingBatch:  # type: ignore[override]
        """Batch ``index`` of :meth:`batches`, read and masked (on the CPU), as :meth:`loss` would."""
        starts = self.train.starts(seed, epoch, index)
        return self.masked(starts, torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + index))

    def input_tokens(self, item: Any) -> int:  # type: ignore[override]
        rows = item.ids.shape[0] if isinstance(item, PretrainingBatch) else len(item[0])
        return rows * self.max_seq_len

    def loss(self, model: Any, item: Any) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return super().loss(model, item if isinstance(item, PretrainingBatch) else self._read(item))

    def evaluate(self, model: Any) -> dict[str, float]:
        if self._eval_batches is None:
            g = torch.Generator().manual_seed(54321)  # the same masks at every evaluation
            self._eval_batches = [self.masked(self.valid_starts[i : i + self.batch_size], g).to(self.device)
                                  for i in range(0, len(self.valid_starts), self.batch_size)]
        return super().evaluate(model)
