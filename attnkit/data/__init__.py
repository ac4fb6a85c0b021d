"""Data: tokenizers, sequence-to-sequence batching, parallel corpora and synthetic tasks."""

from attnkit.data.parallel import ParallelCorpus, TokenBatches, read_parallel
from attnkit.data.seq2seq import PairDataset, Seq2SeqBatch, collate, pad
from attnkit.data.subword import train_subword_tokenizer
from attnkit.data.synthetic import synthetic_task
from attnkit.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, char_tokenizer, load_tokenizer

__all__ = [
    "BOS_ID", "EOS_ID", "PAD_ID", "SPECIALS", "UNK_ID", "PairDataset", "Seq2SeqBatch",
    "char_tokenizer", "collate", "load_tokenizer", "pad", "synthetic_task",
    "ParallelCorpus", "TokenBatches", "read_parallel", "train_subword_tokenizer",
]
