"""Transfer beyond plain fine-tuning: few-shot PET on SST-2 and RTE with 16 examples per class, 5 seeds (the LM-BFF protocol).

all-MiniLM-L6-v2 was trained as a sentence encoder and ships without a masked-LM head, so each
recipe first runs the task-adaptive masked-LM stage of its fine-tuning recipe (``sst2-tapt``,
``rte-tapt``: 1,000 steps on the task's unlabelled training sentences), which trains one; its
model is the masked LM the patterns query. Patterns and verbalisers are LM-BFF's manual ones
(Gao et al. 2021, table 1: SST-2 ``<S> It was [MASK] .`` with great / terrible; RTE
``<S1> ? [MASK] , <S2>`` with yes / no) plus PET-style variants (Schick & Schütze 2021, section 4).
The K-shot sets are drawn from the training file; the original dev file is the test set.
``--set data.method=finetune`` runs the fine-tuning baseline on the same sets, ``--set
peft.method=ptuning`` P-tuning's prompts, and every PET run reports zero-shot accuracies.
"""

from __future__ import annotations

from attnkit.recipes import register
from attnkit.recipes.base import Recipe, Stage
from attnkit.runs.fewshot import FewshotDataConfig, fewshot_train
from attnkit.recipes.bert import MINILM, _quick, _train
from attnkit.runs.finetune import FinetuneDataConfig, finetune_train
from attnkit.runs.mlm_qa import MLMQADataConfig

QUICK = ("data.shots=4", "data.seeds=1", "data.limit=80", "data.eval_limit=16", "data.unlabeled_limit=16", "data.max_len=32",
         "train.steps=2", "train.eval.every=1", "train.batch_size=4", "train.log_every=1")

register(Recipe(
    name="sst2-pet",
    task="fewshot",
    summary="SST-2, 16 shots per class, 5 seeds: PET with 3 patterns (great / terrible) on all-MiniLM-L6-v2 after the sst2-tapt "
            "stage, ensemble distilled into a classifier; lr 1e-5, 1,000 steps of 8 per model",
    train=fewshot_train(),
    data=FewshotDataConfig(model="all-MiniLM-L6-v2", train="sst2/train.tsv", test="sst2/dev.tsv", verbalizer="0=terrible,1=great",
                           patterns=("{a} It was [MASK].", "{a} All in all, it was [MASK].", "Just [MASK]! {a}"), max_len=128),
    files=("data.train", "data.test"),
    before=(Stage("sst2-tapt", "data.model"),),
    quick=QUICK,
))

register(Recipe(
    name="rte-pet",
    task="fewshot",
    summary="RTE, 16 shots per class, 5 seeds: PET with 2 patterns (yes / no) on all-MiniLM-L6-v2 after the rte-tapt stage, "
            "ensemble distilled into a classifier; lr 1e-5, 1,000 steps of 8 per model",
    train=fewshot_train(),
    data=FewshotDataConfig(model="all-MiniLM-L6-v2", train="rte/train.tsv", test="rte/dev.tsv",
                           verbalizer="entailment=yes,not_entailment=no",
                           patterns=("{a} ? [MASK] , {b}", '"{b}" ? [MASK] , "{a}"'), max_len=256),
    files=("data.train", "data.test"),
    before=(Stage("rte-tapt", "data.model"),),
    quick=QUICK,
))

register(Recipe(
    name="xquad-mlm-qa",
    task="mlm-qa",
    summary="XQuAD-en reading comprehension with a masked LM: all-MiniLM-L6-v2 after the xquad-mlm stage (its masked-LM "
            "head trained on the training articles' text) predicts 16 answer tokens in one pass; 40 articles train, the last 8 "
            "evaluate; 15 epochs, lr 1e-4 (as xquad-minilm)",
    train=finetune_train("f1", log_every=10).replace(optim=finetune_train("f1").optim.replace(lr=1e-4)),
    data=MLMQADataConfig(model="all-MiniLM-L6-v2", data="squad/xquad.en.json", split_articles=8, epochs=15.0, max_len=384,
                         answer_len=16),
    files=("data.data",),
    before=(Stage("xquad-mlm", "data.model"),),
    quick=("data.limit=24", "data.eval_limit=12", "data.max_len=128", "data.steps_from_epochs=false", "data.eval_per_epoch=false",
           "train.steps=3", "train.eval.every=3", "train.batch_size=8", "train.log_every=1"),
))

register(Recipe(
    name="sst2-minilm-features",
    task="classify",
    summary="SST-2 feature-based: all-MiniLM-L6-v2 frozen, its last four layers concatenated and mean-pooled into a linear "
            "classifier; 3 epochs of 32, lr 1e-3",
    train=_train("accuracy", lr=1e-3, batch_size=32),
    data=FinetuneDataConfig(model=MINILM, train="sst2/train.tsv", dev="sst2/dev.tsv", epochs=3.0, max_len=66, features="last4"),
    files=("data.train", "data.dev"),
    quick=_quick(),
))

register(Recipe(
    name="wnut17-minilm-features",
    task="ner",
    summary="WNUT-17 feature-based: all-MiniLM-L6-v2 frozen, its last four layers concatenated into a two-layer BiLSTM "
            "(384 per direction) and a linear tagger; 5 epochs of 32, lr 1e-3",
    train=_train("f1", lr=1e-3, batch_size=32),
    data=FinetuneDataConfig(model=MINILM, train="wnut17/wnut17train.conll", dev="wnut17/emerging.dev.conll",
                            test="wnut17/emerging.test.annotated", epochs=5.0, max_len=128, features="last4"),
    files=("data.train", "data.dev", "data.test"),
    quick=_quick(limit=300),
))
