"""Data: tokenizers, sequence-to-sequence batching and synthetic tasks."""

from attnkit.data.seq2seq import PairDataset, Seq2SeqBatch, collate, pad
from attnkit.data.synthetic import synthetic_task
from attnkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, char_tokenizer, load_tokenizer

__all__ = [
    "BOS_ID", "EOS_ID", "PAD_ID", "SPECIALS", "UNK_ID", "PairDataset", "Seq2SeqBatch",
    "char_tokenizer", "collate", "load_tokenizer", "pad", "synthetic_task",
]
