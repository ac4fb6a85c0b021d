"""ELECTRA pretraining recipe (Clark et al. 2020): ELECTRA-Small's discriminator and a 1/4-width generator, from scratch."""

from __future__ import annotations

from attnkit.models.bert import bert_preset
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.runs.mlm import MLMDataConfig, scratch_train

register(Recipe(
    name="electra-shakespeare",
    task="electra",
    summary="tiny Shakespeare: ELECTRA-Small (12 layers, d_model 256, embeddings 128) with a 1/4-width generator learns "
            "replaced-token detection from scratch on full-sentence sequences of 128 tokens, WordPiece 8k; AdamW lr 5e-4, "
            "2,000 steps of 32",
    model=bert_preset("electra-small-discriminator"),
    train=scratch_train(),
    data=MLMDataConfig(text=("tinyshakespeare/input.txt",), vocab_size=8000, pair_task="none", max_seq_len=128),
    files=("data.text",),
    quick=("model.n_layers=2", "model.d_model=32", "model.n_heads=4", "model.d_ff=64", "model.d_embed=16", "train.steps=6",
           "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=3", "train.log_every=3", "data.vocab_size=300",
           "data.max_seq_len=32", "data.max_documents=200", "data.max_eval_pairs=16", "data.valid_fraction=0.1"),
))
