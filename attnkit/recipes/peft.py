"""Parameter-efficient fine-tuning recipes: all-MiniLM-L6-v2 on SST-2 and RTE, one recipe per adapter.

The base stays frozen; the adapter and the classifier (trained in full beside it) are the only
weights that move. One table (:data:`METHODS`) gives each method's ``peft`` section and learning
rate, and every method gets an ``sst2-minilm-<method>`` and an ``rte-minilm-<method>`` recipe
with the data, batch and epochs of the full fine-tuning recipes (no task-adaptive stage: the
adapter goes on the released checkpoint). The settings are the papers':

* LoRA (Hu et al. 2021): rank 8, alpha 16, dropout 0.05 on the query and value slices of every
  layer's fused projection (section 7.1); lr 5e-4, higher than full fine-tuning since only the
  small matrices move.
* DoRA (Liu et al. 2024): LoRA's placement and rank plus a trained magnitude per output unit;
  the same learning rate as LoRA (the paper keeps LoRA's hyperparameters).
* QLoRA (Dettmers et al. 2023): the base in NF4 with double-quantized constants; LoRA on every
  linear layer of the blocks (section 4: adapting all of them is what matches full fine-tuning),
  rank 64, alpha 16, dropout 0.1 (the paper's values for models up to 13B); lr 5e-4, LoRA's for a
  model of this size (the paper's 2e-4 is for 7B and larger).
* Prefix tuning (Li & Liang 2021): 20 virtual keys and values per layer through the MLP
  reparameterisation (width 512); lr 1e-3. Under Adam every weight of the MLP moves by about the
  learning rate at each step, so each prefix entry, a sum over the 512 hidden units, can move by
  up to 512 times that: far faster than a table trained directly. At P-tuning v2's rates
  (5e-3..1e-2) under bf16 autocast the prefix drives the model to one constant prediction; the paper trains the
  MLP at rates of the order of 5e-5 over many epochs, and 1e-3 still learns within a few hundred steps.
* P-tuning v2 (Liu et al. 2022): the same deep prompts trained directly, 20 per layer (the
  length the paper finds enough for simple classification); lr 1e-2, within its searched range.
* Prompt tuning (Lester et al. 2021): 20 virtual input tokens initialised from embeddings of
  sampled vocabulary entries (section 3.2, better than random); lr 3e-2: a prompt alone needs
  a far larger step than weights (the paper uses 0.3 with Adafactor).
* P-tuning (Liu et al. 2021): 20 virtual tokens from a bidirectional LSTM prompt encoder; lr 1e-2.

A GPT adapted to a new text: ``shakespeare-multi30k-lora`` and ``shakespeare-multi30k-full`` take
the character-level Shakespeare GPT (their ``shakespeare-char`` stage trains it) on to the English
captions of Multi30k, with LoRA (rank 8, alpha 16 on every linear layer of the blocks, lr 1e-3,
as QLoRA's section 4 adapts all of them to match full fine-tuning) or every weight (lr 3e-4, a
third of the base's peak rate), the same 1,000 steps of 64 windows. The captions hold a few
characters Shakespeare does not (digits, quotes); they are read as ``<unk>``. ``eval.json`` holds
the validation loss on the held-out 10% of the captions after adaptation (``loss``) and before
it (``start_loss``).
"""

from __future__ import annotations

from attnkit.peft.method import PEFTConfig
from attnkit.recipes import register
from attnkit.recipes.base import Recipe, Stage
from attnkit.recipes.bert import MINILM, _quick, _train
from attnkit.runs.finetune import FinetuneDataConfig
from attnkit.runs.lm import TextDataConfig
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig

LORA = PEFTConfig(method="lora", r=8, alpha=16.0, dropout=0.05, targets=("q", "v"))
# every linear layer of the encoder blocks: the Q, K and V slices of the fused projection (one adapter each, as the
# separate layers of the published model), the attention output, both FFN layers
ALL_LINEAR = ("q", "k", "v", "o", "w1", "w2")

# recipe suffix -> (peft section, learning rate, what the summary says trains)
METHODS: dict[str, tuple[PEFTConfig, float, str]] = {
    "lora": (LORA, 5e-4, "LoRA r=8 on q and v"),
    "dora": (LORA.replace(dora=True), 5e-4, "DoRA r=8 on q and v"),
    "qlora": (PEFTConfig(method="qlora", r=64, alpha=16.0, dropout=0.1, targets=ALL_LINEAR), 5e-4,
              "QLoRA r=64 on every linear layer of an NF4 base"),
    "prefix": (PEFTConfig(method="prefix", n_virtual=20, hidden=512), 1e-3, "prefix tuning, 20 virtual keys/values per layer via an MLP"),
    "ptuning-v2": (PEFTConfig(method="ptuning-v2", n_virtual=20), 1e-2, "P-tuning v2, 20 deep prompts per layer"),
    "prompt": (PEFTConfig(method="prompt", n_virtual=20, init="vocab"), 3e-2, "prompt tuning, 20 soft tokens from vocabulary embeddings"),
    "ptuning": (PEFTConfig(method="ptuning", n_virtual=20, encoder="lstm", hidden=128), 1e-2, "P-tuning, 20 soft tokens from an LSTM encoder"),
}

# task -> (summary head, batch size, data); the data and batch of the full fine-tuning recipes
TASKS: dict[str, tuple[str, int, FinetuneDataConfig]] = {
    "sst2": ("SST-2 sentiment", 32, FinetuneDataConfig(model=MINILM, train="sst2/train.tsv", dev="sst2/dev.tsv", epochs=3.0, max_len=66)),
    "rte": ("RTE entailment", 8, FinetuneDataConfig(model=MINILM, train="rte/train.tsv", dev="rte/dev.tsv", epochs=10.0, max_len=256)),
}


def _lr(lr: float) -> str:
    """``5e-4``, not ``0.0005``."""
    return f"{lr:.0e}".replace("e-0", "e-")


def peft_recipes() -> list[Recipe]:
    """One ``<task>-minilm-<method>`` recipe per task and method of the tables."""
    out = []
    for task, (head, batch, data) in TASKS.items():
        for method, (peft, lr, what) in METHODS.items():
            out.append(Recipe(
                name=f"{task}-minilm-{method}",
                task="classify",
                summary=f"{head}: all-MiniLM-L6-v2 (frozen) with {what}, classifier trained, {data.epochs:g} epochs, lr {_lr(lr)}, batch {batch}",
                train=_train("accuracy", lr=lr, batch_size=batch),
                data=data,
                peft=peft,
                files=("data.train", "data.dev"),
                quick=_quick(),
            ))
    return out


for recipe in peft_recipes():
    register(recipe)


def _adapt_train(lr: float) -> TrainConfig:
    """1,000 steps of 64 windows on the new text: AdamW, 50 warm-up steps then cosine decay to lr/10, evaluated every 100 steps."""
    return TrainConfig(
        steps=1000, batch_size=64, log_every=100,
        optim=OptimConfig(name="adamw", lr=lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, clip_norm=1.0),
        schedule=ScheduleConfig(kind="cosine", warmup=50, min_lr_ratio=0.1),
        eval=EvalConfig(every=100), reg=RegularizationConfig(label_smoothing=0.0),
    )


# adaptation -> (peft section, learning rate, what trains)
ADAPT: dict[str, tuple[PEFTConfig, float, str]] = {
    "lora": (PEFTConfig(method="lora", r=8, alpha=16.0, dropout=0.05, targets=ALL_LINEAR), 1e-3, "LoRA r=8 on every linear layer"),
    "full": (PEFTConfig(), 3e-4, "every weight"),
}
ADAPT_QUICK = ("train.steps=6", "data.sample_tokens=20", "train.batch_size=8", "train.schedule.warmup=1", "train.eval.every=6", "train.log_every=3")


def adapt_recipes() -> list[Recipe]:
    """``shakespeare-multi30k-<adaptation>``: the char-level Shakespeare GPT continued on Multi30k's English captions."""
    return [Recipe(
        name=f"shakespeare-multi30k-{name}",
        task="lm",
        summary=f"the shakespeare-char GPT adapted to Multi30k's English captions (characters; unseen ones as <unk>): {what}, "
                f"1,000 steps, lr {_lr(lr)}",
        train=_adapt_train(lr),
        data=TextDataConfig(text="multi30k/train.en.gz", tokenizer="char", unknown="unk", sample_tokens=200),
        peft=peft,
        files=("data.text",),
        before=(Stage("shakespeare-char", "data.model"),),
        quick=ADAPT_QUICK,
    ) for name, (peft, lr, what) in ADAPT.items()]


for recipe in adapt_recipes():
    register(recipe)
