"""Long texts beyond one window: Transformer-XL's segment-level recurrence (Dai et al. 2019) on tiny Shakespeare.

``shakespeare-xl`` is the char-shakespeare GPT with Transformer-XL's relative attention, trained on consecutive
segments of 128 characters with a memory of 128 positions per layer (``data.segment``, ``data.mem_len``), so each
query attends to up to 256 keys while 128 tokens are fed per row and step. ``--set data.mem_len=0`` trains the
same model on the same segments without memory (the comparison of ``benchmarks/long_context.py``).

``shakespeare-adaptive-span`` is ``shakespeare-xl`` with a memory of 256 and the adaptive attention span of
Sukhbaatar et al. 2019 (``model.attention.kind=adaptive_span``): each head learns how far back it looks, at most 384
positions, under an L1 penalty; the spans start at the maximum (the model starts as ``shakespeare-xl`` with that
memory) and shrink where the loss allows; ``eval.json`` reports them, and keys beyond every head's span are skipped.
Its attention has no dropout, so training on CUDA takes the FlexAttention implementation and its per-head block mask.
``--set model.attention.params.span_loss=0`` keeps every span at 384, beyond every distance among its 384 keys: the
same model with attention no span restricts (the baseline of ``benchmarks/long_context.py``).

``sst2-minilm-chunks`` makes SST-2 sentences longer than the encoder's window by giving all-MiniLM-L6-v2 a window of
16 positions (``data.max_len``): each sentence is read in chunks of 14 word pieces with 4 memory tokens carried from
chunk to chunk (Bulatov et al. 2022); ``--set data.long=truncate`` (the first 14 word pieces) and ``data.long=average``
(the mean of the chunks' logits) are the baselines, and ``data.long=xl`` reads each chunk with Transformer-XL memory of
the earlier chunks (``data.memory_len`` positions of them; 0, the default, keeps them all).

``sst2long-minilm-chunks`` classifies documents longer than the encoder's 512 positions: majority documents of about
1,800 word pieces made of SST-2 sentences (:mod:`attnkit.data.majority_documents`; ``attnkit data majority-documents
--data-root DATA`` writes ``DATA/sst2-long``), whose label is the majority sentiment of their sentences, decided by a
stretch of 16 sentences that may sit anywhere. all-MiniLM-L6-v2 reads them through its own window of 512 in at most 4
chunks of 510 word pieces with 4 memory tokens carried across chunks (``data.long=memory``) or with Transformer-XL
memory of the earlier chunks (``data.long=xl``); ``data.long=truncate`` (the first 510 word pieces) and
``data.long=average`` are the baselines.

``shakespeare-hierarchical`` is the char-shakespeare GPT with two-level hierarchical attention (after Zhu & Soricut
2021, ``model.attention.kind=hierarchical``, blocks of 64): each character attends exactly to the earlier ones of its
block and to the mean key and value of each earlier block, 64 + 4 scores per query at the context of 256 instead of 256.
"""

from __future__ import annotations

from attnkit.models.gpt import gpt_preset
from attnkit.models.transformer import AttentionConfig
from attnkit.positions.config import PositionConfig
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.recipes.bert import MINILM, _quick, _train
from attnkit.runs.finetune import FinetuneDataConfig
from attnkit.runs.lm import TextDataConfig
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig

XL_ATTENTION = AttentionConfig(dropout=0.2, position=PositionConfig(kind="xl_relative"))
HIERARCHICAL_ATTENTION = AttentionConfig(kind="hierarchical", dropout=0.2, params={"block": 64})
# no attention dropout: FlexAttention has none, and without it training takes the FlexAttention path on CUDA, whose
# per-head block mask skips the keys beyond each span (residual and embedding dropout stay)
SPAN_ATTENTION = AttentionConfig(kind="adaptive_span", dropout=0.0, position=PositionConfig(kind="xl_relative"),
                                 params={"max_span": 384, "ramp": 32, "init": 1.0, "span_loss": 2e-6})

# the char-shakespeare schedule shared by the character-level recipes here: AdamW, 100 warm-up steps, cosine to lr/10
CHAR_TRAIN = TrainConfig(
    steps=2500, batch_size=64, log_every=500,
    optim=OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5, clip_norm=1.0),
    schedule=ScheduleConfig(kind="cosine", warmup=100, min_lr_ratio=0.1),
    eval=EvalConfig(every=250), reg=RegularizationConfig(label_smoothing=0.0),
)

register(Recipe(
    name="shakespeare-xl",
    task="lm",
    summary="tiny Shakespeare, characters: the char-shakespeare GPT with Transformer-XL relative attention, consecutive "
            "segments of 128 with a memory of 128 per layer (data.mem_len), AdamW, cosine to lr/10 over 2,500 steps",
    model=gpt_preset("char-shakespeare", attention=XL_ATTENTION),
    train=CHAR_TRAIN,
    data=TextDataConfig(text="tinyshakespeare/input.txt", tokenizer="char", sample_tokens=0, segment=128, mem_len=128),
    files=("data.text",),
    quick=("model.n_layers=1", "model.n_heads=2", "model.d_model=32", "model.context=32", "data.segment=16", "data.mem_len=16",
           "train.steps=20", "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=20", "train.log_every=10"),
))

register(Recipe(
    name="shakespeare-adaptive-span",
    task="lm",
    summary="tiny Shakespeare, characters: shakespeare-xl with a memory of 256 and an adaptive attention span per head "
            "(at most 384, ramp 32, L1 penalty 2e-6); eval.json reports the learned spans",
    model=gpt_preset("char-shakespeare", context=384, attention=SPAN_ATTENTION),
    train=CHAR_TRAIN,
    data=TextDataConfig(text="tinyshakespeare/input.txt", tokenizer="char", sample_tokens=0, segment=128, mem_len=256),
    files=("data.text",),
    quick=("model.n_layers=1", "model.n_heads=2", "model.d_model=32", "model.context=48", "data.segment=16", "data.mem_len=32",
           "model.attention.params.max_span=48", "model.attention.params.ramp=4", "train.steps=20", "train.batch_size=8",
           "train.schedule.warmup=2", "train.eval.every=20", "train.log_every=10"),
))

register(Recipe(
    name="shakespeare-hierarchical",
    task="lm",
    summary="tiny Shakespeare, characters: the char-shakespeare GPT with hierarchical attention (exact inside blocks of "
            "64, the earlier blocks' mean keys and values across them), AdamW, cosine to lr/10 over 2,500 steps",
    model=gpt_preset("char-shakespeare", attention=HIERARCHICAL_ATTENTION),
    train=CHAR_TRAIN,
    data=TextDataConfig(text="tinyshakespeare/input.txt", tokenizer="char", sample_tokens=0),
    files=("data.text",),
    quick=("model.n_layers=1", "model.n_heads=2", "model.d_model=32", "model.context=32", "model.attention.params.block=8",
           "train.steps=20", "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=10", "train.log_every=10"),
))

register(Recipe(
    name="sst2-minilm-chunks",
    task="classify",
    summary="SST-2 sentiment read through a window of 16 positions: all-MiniLM-L6-v2 on chunks of 14 word pieces with 4 "
            "memory tokens carried across chunks (data.long=memory; truncate and average are the baselines), 3 epochs",
    train=_train("accuracy", lr=1.2e-4, batch_size=32, eval_every=500),
    data=FinetuneDataConfig(model=MINILM, train="sst2/train.tsv", dev="sst2/dev.tsv", epochs=3.0, max_len=16, eval_per_epoch=False,
                            long="memory", memory_tokens=4, max_chunks=8),
    files=("data.train", "data.dev"),
    quick=_quick(max_len=12),
))

register(Recipe(
    name="sst2long-minilm-chunks",
    task="classify",
    summary="SST-2 majority documents (attnkit data majority-documents; about 1,800 word pieces, labelled by the majority "
            "sentiment of their sentences): all-MiniLM-L6-v2 at its window of 512, up to 4 chunks with 4 memory tokens "
            "(data.long=memory; truncate and average are the baselines), 2 epochs of 4,000 documents",
    train=_train("accuracy", lr=1e-4, batch_size=16, eval_every=500),
    data=FinetuneDataConfig(model=MINILM, train="sst2-long/train.tsv", dev="sst2-long/dev.tsv", epochs=2.0, max_len=512,
                            eval_per_epoch=False, long="memory", memory_tokens=4, max_chunks=4),
    files=("data.train", "data.dev"),
    quick=_quick(limit=16, eval_limit=8, max_len=64),
))
