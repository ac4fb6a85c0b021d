"""Sequence-to-sequence examples: padding, batching and the teacher-forcing shift.

The decoder input is ``<s> y_1 ... y_n`` and its target ``y_1 ... y_n </s>`` (the
"output embeddings offset by one position" of Vaswani et al. 2017, section 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor

from attnkit.data.batching import pad
from attnkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID
from attnkit.data.transfer import TensorBatch
from attnkit.errors import DataError

__all__ = ["PairDataset", "Seq2SeqBatch", "collate", "pad"]


@dataclass
class Seq2SeqBatch(TensorBatch):
    src: Tensor  # (B, Ts)
    tgt_in: Tensor  # (B, Tt)  <s> y_1 .. y_n
    tgt_out: Tensor  # (B, Tt)  y_1 .. y_n </s>

    @property
    def n_tokens(self) -> int:
        return int((self.tgt_out != PAD_ID).sum())


def collate(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], bos_id: int = BOS_ID, eos_id: int = EOS_ID, pad_id: int = PAD_ID) -> Seq2SeqBatch:
    """Source ids, and the target shifted for teacher forcing, each padded to its longest row."""
    src = pad([s for s, _ in pairs], pad_id)
    tgt_in = pad([[bos_id, *t] for _, t in pairs], pad_id)
    tgt_out = pad([[*t, eos_id] for _, t in pairs], pad_id)
    return Seq2SeqBatch(src, tgt_in, tgt_out)


class PairDataset:
    """A list of ``(source ids, target ids)`` pairs with deterministic shuffled batching."""

    def __init__(self, pairs: list[tuple[list[int], list[int]]], name: str = "dataset") -> None:
        if not pairs:
            raise DataError(f"{name} is empty: it needs at least one (source, target) pair")
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def batches(self, batch_size: int, *, epoch: int = 0, seed: int = 0, shuffle: bool = True) -> Iterator[Seq2SeqBatch]:
        """Batches of one epoch; the order depends only on ``(seed, epoch)`` so a resumed run sees the same data."""
        if shuffle:
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.pairs), generator=g).tolist()
        else:
            order = list(range(len(self.pairs)))
        for i in range(0, len(order), batch_size):
            yield collate([self.pairs[j] for j in order[i : i + batch_size]])

    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.pairs) // batch_size)
