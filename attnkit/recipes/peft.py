"""Parameter-efficient fine-tuning recipes: all-MiniLM-L6-v2 on SST-2 and RTE with an adapter.

The base stays frozen; LoRA (Hu et al. 2021) adapts the query and value slices of every layer's
fused projection (the paper's default, section 7.1) with rank 8, alpha 16, dropout 0.05, and the
classifier trains in full beside it. The learning rate is the one LoRA papers use for encoders of
this size (higher than full fine-tuning: only the small matrices move). No task-adaptive stage:
the adapter goes on the released checkpoint. Other methods run on the same recipe with
``--set peft.method=dora|qlora|prefix|ptuning-v2|prompt|ptuning`` (``peft.dora=true`` for DoRA).
"""

from __future__ import annotations

from attnkit.peft.method import PEFTConfig
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.recipes.bert import MINILM, _quick, _train
from attnkit.runs.finetune import FinetuneDataConfig

LORA = PEFTConfig(method="lora", r=8, alpha=16.0, dropout=0.05, targets=("q", "v"))

register(Recipe(
    name="sst2-minilm-lora",
    task="classify",
    summary="SST-2 sentiment: LoRA r=8 on q and v of all-MiniLM-L6-v2 (frozen), classifier trained, 3 epochs, lr 5e-4",
    train=_train("accuracy", lr=5e-4, batch_size=32),
    data=FinetuneDataConfig(model=MINILM, train="sst2/train.tsv", dev="sst2/dev.tsv", epochs=3.0, max_len=66),
    peft=LORA,
    files=("data.train", "data.dev"),
    quick=_quick(),
))

register(Recipe(
    name="rte-minilm-lora",
    task="classify",
    summary="RTE entailment: LoRA r=8 on q and v of all-MiniLM-L6-v2 (frozen), classifier trained, 10 epochs, lr 5e-4, batch 8",
    train=_train("accuracy", lr=5e-4, batch_size=8),
    data=FinetuneDataConfig(model=MINILM, train="rte/train.tsv", dev="rte/dev.tsv", epochs=10.0, max_len=256),
    peft=LORA,
    files=("data.train", "data.dev"),
    quick=_quick(),
))
