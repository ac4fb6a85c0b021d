"""Fine-tuning recipes: all-MiniLM-L6-v2 on SST-2, RTE, WNUT-17 and XQuAD.

all-MiniLM-L6-v2 (6 layers, hidden 384) was trained as a sentence encoder on mean-pooled
states, so ``classify`` pools by the mean (``data.classifier=auto`` reads the checkpoint's
sentence-transformers files). The recipes start from BERT's fine-tuning recipe (Devlin et al.
2019, appendix A.3: AdamW, linear decay, 10% warm-up) and add, where the published run used
them, ELECTRA's layer-wise learning-rate decay (Clark et al. 2020), a moving average of the
weights, R-Drop (Liang et al. 2021) and a task-adaptive masked-LM pretraining stage on the
task's training sentences (Gururangan et al. 2020). A recipe is one run (one seed); figures
that average several runs or their uniform soups (Wortsman et al. 2022, ``attnkit average``)
say so.
"""

from __future__ import annotations

from attnkit.recipes import register
from attnkit.recipes.base import Recipe, Stage
from attnkit.runs.finetune import FinetuneDataConfig, finetune_train
from attnkit.runs.qa import QADataConfig
from attnkit.training.config import TrainConfig

MINILM = "all-MiniLM-L6-v2"


def _train(metric: str, *, lr: float, batch_size: int, layer_decay: float = 1.0, ema_decay: float = 0.0, rdrop: float = 0.0,
           eval_every: int = 0) -> TrainConfig:
    """BERT's fine-tuning recipe (:func:`~attnkit.runs.finetune.finetune_train`) with a recipe's own settings."""
    base = finetune_train(metric)
    return base.replace(
        batch_size=batch_size,
        optim=base.optim.replace(lr=lr, layer_decay=layer_decay),
        eval=base.eval.replace(every=eval_every),
        reg=base.reg.replace(rdrop=rdrop, ema_decay=ema_decay),
    )




def _quick(limit: int = 48, eval_limit: int = 24, max_len: int = 32) -> tuple[str, ...]:
    """The quick CPU variant: a few dozen examples, 3 optimizer steps, short rows, one evaluation."""
    return (f"data.limit={limit}", f"data.eval_limit={eval_limit}", f"data.max_len={max_len}", "data.steps_from_epochs=false",
            "data.eval_per_epoch=false", "train.steps=3", "train.eval.every=3", "train.batch_size=8", "train.log_every=1")


register(Recipe(
    name="sst2-minilm",
    task="classify",
    summary="SST-2 sentiment: all-MiniLM-L6-v2 after 1,000 steps of task-adaptive MLM, 3 epochs, lr 1.2e-4, layer decay 0.85, "
            "weight EMA 0.999, R-Drop 1.0",
    figure="dev accuracy 91.10: mean of five uniform soups of 5 seeds each (attnkit average); the 25 single runs average 91.01",
    train=_train("accuracy", lr=1.2e-4, batch_size=32, layer_decay=0.85, ema_decay=0.999, rdrop=1.0, eval_every=500),
    data=FinetuneDataConfig(model=MINILM, train="sst2/train.tsv", dev="sst2/dev.tsv", epochs=3.0, max_len=66, eval_per_epoch=False),
    files=("data.train", "data.dev"),
    before=(Stage("sst2-tapt", "data.model"),),
    quick=_quick(),
))

register(Recipe(
    name="rte-minilm",
    task="classify",
    summary="RTE entailment (sentence pairs): all-MiniLM-L6-v2 after 1,000 steps of task-adaptive MLM, 10 epochs, lr 3e-5, batch 8",
    figure="dev accuracy 64.89: mean of 4 seeds, each a single run after its own task-adaptive pretraining stage",
    train=_train("accuracy", lr=3e-5, batch_size=8),
    data=FinetuneDataConfig(model=MINILM, train="rte/train.tsv", dev="rte/dev.tsv", epochs=10.0, max_len=256),
    files=("data.train", "data.dev"),
    before=(Stage("rte-tapt", "data.model"),),
    quick=_quick(),
))

register(Recipe(
    name="wnut17-minilm",
    task="ner",
    summary="WNUT-17 emerging entities (CoNLL): all-MiniLM-L6-v2, 5 epochs, lr 2e-4, layer decay 0.9, weight EMA 0.99; "
            "chosen on emerging.dev, scored on emerging.test",
    figure="test entity F1 45.15: mean of six uniform soups of 6 seeds each (attnkit average); the 36 single runs average 44.17",
    train=_train("f1", lr=2e-4, batch_size=32, layer_decay=0.9, ema_decay=0.99),
    data=FinetuneDataConfig(model=MINILM, train="wnut17/wnut17train.conll", dev="wnut17/emerging.dev.conll",
                            test="wnut17/emerging.test.annotated", epochs=5.0, max_len=128),
    files=("data.train", "data.dev", "data.test"),
    # the first 267 training sentences hold all 13 tags, which the dev and test slices need
    quick=_quick(limit=300),
))

register(Recipe(
    name="xquad-minilm",
    task="qa",
    summary="XQuAD-en extractive QA: all-MiniLM-L6-v2 trained on 40 articles, evaluated on the last 8; 15 epochs, lr 1e-4",
    figure="dev exact match 31.64 / F1 50.66 on the 8 held-out articles, one run on one H100",
    train=_train("f1", lr=1e-4, batch_size=32).replace(log_every=10),
    data=QADataConfig(model=MINILM, data="squad/xquad.en.json", split_articles=8, epochs=15.0, max_len=384, doc_stride=128),
    files=("data.data",),
    quick=(*_quick(limit=24, eval_limit=12, max_len=128), "data.doc_stride=64"),
))
