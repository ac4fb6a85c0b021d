"""A small ALBERT pretrained from scratch, and its SST-2 fine-tuning (shared or un-shared layers).

ALBERT (Lan et al. 2020) is BERT with two parameter reductions and a sentence-pair task, all in
section 3.1: factorised embeddings (a vocabulary table of width E = ``d_embed`` projected to
H = ``d_model``), cross-layer parameter sharing (``share_layers``: one layer applied at every
depth) and sentence-order prediction (SOP: two consecutive segments of a document, swapped half
the time) beside masked LM. Like the released ALBERT v2 it uses the tanh GELU and no dropout in the
encoder (section 4.8 found dropout hurts), and 0.1 dropout on the classifier when fine-tuning.

- ``albert-small-mlm``: 6 layers of width 256 (4 heads, d_ff 1024), embeddings 128, masked LM +
  SOP on the shipped English text (SST-2's and RTE's training sentences, tiny Shakespeare) with a
  WordPiece vocabulary of 8,000 learned from it; AdamW, lr 5e-4, 2,000 steps of 128 sequences of
  128 tokens. Deviations from the paper: BERT's single-token masking instead of ALBERT's n-gram
  masking and AdamW instead of LAMB (section 4.1), and a far smaller model, corpus and budget.
- ``sst2-albert-small``: that model (its stage) fine-tuned on SST-2 for 1,500 steps of 32
  (about 0.7 epoch), AdamW lr 1e-4, 10% warm-up then linear decay, the pooled [CLS] vector
  (the pooler SOP trained) and one dev evaluation after the last step. ``--set
  model.share_layers=false`` runs the same recipe with the shared layer copied into independent
  layers at load (:func:`~attnkit.models.bert.unshare_layers`).
"""

from __future__ import annotations

from attnkit.models.bert import BertConfig
from attnkit.models.transformer import AttentionConfig
from attnkit.recipes import register
from attnkit.recipes.base import Recipe, Stage
from attnkit.runs.finetune import FinetuneDataConfig, finetune_train
from attnkit.runs.mlm import MLMDataConfig, scratch_train

PRETRAIN_STEPS, FINETUNE_STEPS = 2000, 1500
_PRETRAIN, _FINETUNE = scratch_train(), finetune_train("accuracy")

# vocab_size is left at the default so that the run sets it (and pad_id) from the learned WordPiece vocabulary
ALBERT_SMALL = BertConfig(d_model=256, n_heads=4, n_layers=6, d_ff=1024, d_embed=128, share_layers=True, activation="gelu_tanh",
                          dropout=0.0, attention=AttentionConfig(dropout=0.0))

register(Recipe(
    name="albert-small-mlm",
    task="mlm",
    summary="SST-2 + RTE training sentences and tiny Shakespeare: a small ALBERT (6 shared layers, d_model 256, embeddings 128) "
            f"learns masked LM + sentence-order prediction from scratch, WordPiece 8k; AdamW lr 5e-4, {PRETRAIN_STEPS:,} steps of 128",
    model=ALBERT_SMALL,
    train=_PRETRAIN.replace(steps=PRETRAIN_STEPS, batch_size=128, log_every=100, schedule=_PRETRAIN.schedule.replace(warmup=200),
                            eval=_PRETRAIN.eval.replace(every=500)),
    data=MLMDataConfig(text=("sst2/train.tsv", "rte/train.tsv", "tinyshakespeare/input.txt"), vocab_size=8000, pair_task="sop",
                       max_seq_len=128),
    files=("data.text",),
    quick=("model.n_layers=3", "model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.d_embed=16",
           "train.steps=6", "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=3", "train.log_every=3",
           "data.vocab_size=300", "data.max_seq_len=32", "data.max_documents=200", "data.max_eval_pairs=16",
           "data.valid_fraction=0.1"),
))

register(Recipe(
    name="sst2-albert-small",
    task="classify",
    summary=f"SST-2 sentiment: the albert-small-mlm model (its stage), {FINETUNE_STEPS:,} steps of 32, lr 1e-4, one dev evaluation "
            "at the end; --set model.share_layers=false un-shares its layers at load",
    # one evaluation, after the last step: the dev set scores the final weights, it does not pick a checkpoint
    train=_FINETUNE.replace(steps=FINETUNE_STEPS, batch_size=32, log_every=100, optim=_FINETUNE.optim.replace(lr=1e-4),
                            eval=_FINETUNE.eval.replace(every=FINETUNE_STEPS)),
    data=FinetuneDataConfig(train="sst2/train.tsv", dev="sst2/dev.tsv", max_len=66, classifier_dropout=0.1,
                            steps_from_epochs=False, eval_per_epoch=False),
    files=("data.train", "data.dev"),
    before=(Stage("albert-small-mlm", "data.model"),),
    quick=("data.limit=48", "data.eval_limit=24", "data.max_len=32", "train.steps=3", "train.eval.every=3", "train.batch_size=8",
           "train.log_every=1"),
))
