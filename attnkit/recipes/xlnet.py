"""XLNet recipe (Yang et al. 2019): a small XLNet learns permutation LM from scratch on tiny Shakespeare."""

from __future__ import annotations

from attnkit.models.bert import bert_preset
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.runs.mlm import MLMDataConfig, scratch_train

register(Recipe(
    name="xlnet-shakespeare",
    task="xlnet",
    summary="tiny Shakespeare: an XLNet of BERT-tiny's sizes (2 layers, d_model 128) learns permutation LM with partial "
            "prediction (K = 6) from scratch on full-sentence sequences of 128 tokens, WordPiece 8k; AdamW lr 5e-4, 2,000 steps of 32",
    model=bert_preset("bert-tiny"),
    train=scratch_train(),
    data=MLMDataConfig(text=("tinyshakespeare/input.txt",), vocab_size=8000, pair_task="none", max_seq_len=128),
    files=("data.text",),
    quick=("train.steps=6", "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=3", "train.log_every=3",
           "data.vocab_size=300", "data.max_seq_len=32", "data.max_documents=200", "data.max_eval_pairs=16", "data.valid_fraction=0.1"),
))
