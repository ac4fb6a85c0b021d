"""Pretraining objectives from scratch on tiny Shakespeare, one recipe each, on the same data.

- ``electra-shakespeare``: ELECTRA (Clark et al. 2020), ELECTRA-Small's discriminator and a 1/4-width generator.
- ``unilm-shakespeare``: UniLM (Dong et al. 2019), BERT-tiny under the unified masks.
- ``xlnet-shakespeare``: XLNet (Yang et al. 2019), permutation LM with partial prediction.

All read full-sentence sequences of 128 WordPiece tokens (vocabulary 8k) and train 2,000 steps of 32 with AdamW
at lr 5e-4 (:func:`~attnkit.runs.mlm.scratch_train`), ELECTRA at 2e-4: ELECTRA-Small's 5e-4 (Clark et al. 2020,
appendix A) goes with batches of 128 and 10,000 warm-up steps, not with batches of 32 and a short warm-up.
"""

from __future__ import annotations

from attnkit.models.bert import bert_preset
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.runs.mlm import MLMDataConfig, scratch_train

DATA = MLMDataConfig(text=("tinyshakespeare/input.txt",), vocab_size=8000, pair_task="none", max_seq_len=128)
QUICK = ("train.steps=6", "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=3", "train.log_every=3",
         "data.vocab_size=300", "data.max_seq_len=32", "data.max_documents=200", "data.max_eval_pairs=16", "data.valid_fraction=0.1")
LR = {"electra-shakespeare": 2e-4}  # the others: scratch_train's 5e-4

# name, task, model preset, what it learns, extra quick settings
RECIPES = (
    ("electra-shakespeare", "electra", "electra-small-discriminator",
     "ELECTRA-Small (12 layers, d_model 256, embeddings 128) with a 1/4-width generator learns replaced-token detection "
     "from scratch on full-sentence sequences of 128 tokens",
     ("model.n_layers=2", "model.d_model=32", "model.n_heads=4", "model.d_ff=64", "model.d_embed=16")),
    ("unilm-shakespeare", "unilm", "bert-tiny",
     "BERT-tiny (2 layers, d_model 128) learns masked LM under UniLM's bidirectional, left-to-right, right-to-left and "
     "seq2seq masks (1/3, 1/6, 1/6, 1/3 of the batches)", ()),
    ("xlnet-shakespeare", "xlnet", "bert-tiny",
     "an XLNet of BERT-tiny's sizes (2 layers, d_model 128) learns permutation LM with partial prediction (K = 6) from "
     "scratch on full-sentence sequences of 128 tokens", ()),
)

for name, task, preset, what, quick in RECIPES:
    train = scratch_train()
    train = train.replace(optim=train.optim.replace(lr=LR.get(name, train.optim.lr)))
    lr = f"{train.optim.lr:.0e}".replace("e-0", "e-")  # 2e-4
    register(Recipe(name=name, task=task, summary=f"tiny Shakespeare: {what}, WordPiece 8k; AdamW lr {lr}, 2,000 steps of 32",
                    model=bert_preset(preset), train=train, data=DATA, files=("data.text",), quick=(*quick, *QUICK)))
