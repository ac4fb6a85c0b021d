"""BERT pretraining recipes: masked LM from scratch (Devlin et al. 2019) and task-adaptive pretraining stages
(TAPT, Gururangan et al. 2020) that the fine-tuning recipes run first."""

from __future__ import annotations

from attnkit.models.bert import bert_preset
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.runs.mlm import MLMDataConfig, continued_train, scratch_train

register(Recipe(
    name="bert-mlm-from-scratch",
    task="mlm",
    summary="tiny Shakespeare: BERT-tiny (2 layers, d_model 128) learns masked LM from scratch on full-sentence sequences "
            "of 128 tokens, WordPiece 8k learned from the text; AdamW lr 5e-4, 2,000 steps of 32",
    model=bert_preset("bert-tiny"),
    train=scratch_train(),
    data=MLMDataConfig(text=("tinyshakespeare/input.txt",), vocab_size=8000, pair_task="none", max_seq_len=128),
    files=("data.text",),
    quick=("train.steps=10", "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=5", "train.log_every=5",
           "data.vocab_size=300", "data.max_seq_len=32", "data.max_documents=200", "data.max_eval_pairs=16",
           "data.valid_fraction=0.1"),
))


def _tapt(task: str, what: str) -> Recipe:
    """The TAPT stage of a fine-tuning recipe: all-MiniLM-L6-v2 continues masked LM on ``task``'s training sentences."""
    return Recipe(
        name=f"{task}-tapt",
        task="mlm",
        summary=f"task-adaptive pretraining: all-MiniLM-L6-v2 continues masked LM for 1,000 steps of 32 sequences of 128 tokens "
                f"on the {what} training sentences (lr 1e-4, 6% warm-up); the stage before {task}-minilm",
        # TAPT's learning rate 1e-4; warm-up 0 here becomes data.warmup_fraction (6%) of the steps
        train=continued_train().replace(steps=1000, batch_size=32),
        data=MLMDataConfig(text=(f"{task}/train.tsv",), model="all-MiniLM-L6-v2", pair_task="none", max_seq_len=128,
                           warmup_fraction=0.06),
        files=("data.text",),
        quick=("train.steps=2", "train.batch_size=4", "train.eval.every=2", "train.log_every=1", "data.max_seq_len=32",
               "data.max_documents=2", "data.max_eval_pairs=4"),
    )


register(_tapt("rte", "RTE (both sentences of each pair)"))
register(_tapt("sst2", "SST-2"))

register(Recipe(
    name="xquad-mlm",
    task="mlm",
    summary="task-adaptive pretraining for xquad-mlm-qa: all-MiniLM-L6-v2 continues masked LM for 2,000 steps of 32 sequences "
            "of 256 tokens on the passages and questions of XQuAD-en's first 40 articles (the last 8, which xquad-mlm-qa "
            "evaluates on, left out); lr 1e-4, 6% warm-up",
    train=continued_train().replace(steps=2000, batch_size=32),
    data=MLMDataConfig(text=("squad/xquad.en.json",), model="all-MiniLM-L6-v2", pair_task="none", max_seq_len=256,
                       warmup_fraction=0.06, squad_questions=True, squad_heldout_articles=8),
    files=("data.text",),
    quick=("train.steps=2", "train.batch_size=4", "train.eval.every=2", "train.log_every=1", "data.max_seq_len=32",
           "data.max_documents=4", "data.max_eval_pairs=4"),
))
