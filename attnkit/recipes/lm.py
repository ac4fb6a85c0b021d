"""Decoder-only recipes: character-level tiny Shakespeare (Radford et al. 2019's GPT, nanoGPT's baseline)."""

from __future__ import annotations

from attnkit.models.gpt import gpt_preset
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.runs.lm import TextDataConfig
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig

register(Recipe(
    name="shakespeare-char",
    task="lm",
    summary="tiny Shakespeare, characters: the char-shakespeare GPT (6 layers, d_model 384, context 256), AdamW, "
            "cosine to lr/10 over 2,500 steps, weight EMA 0.995",
    figure="validation loss <= 1.47 in 31.3 s, best 1.4422, on one H100",
    model=gpt_preset("char-shakespeare"),
    train=TrainConfig(
        steps=2500, batch_size=64, log_every=500,
        optim=OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5, clip_norm=1.0),
        schedule=ScheduleConfig(kind="cosine", warmup=100, min_lr_ratio=0.1),
        eval=EvalConfig(every=125), reg=RegularizationConfig(label_smoothing=0.0, ema_decay=0.995),
    ),
    data=TextDataConfig(text="tinyshakespeare/input.txt", tokenizer="char", sample_tokens=0),
    files=("data.text",),
    quick=("model.n_layers=1", "model.n_heads=2", "model.d_model=32", "model.context=32", "train.steps=20", "train.batch_size=8",
           "train.schedule.warmup=2", "train.eval.every=10", "train.log_every=10"),
))

register(Recipe(
    name="shakespeare-llama",
    task="lm",
    summary="tiny Shakespeare, characters: the llama-char model (Llama layers: pre-RMSNorm, SwiGLU, rotary, 6 query and 2 "
            "key/value heads, no biases; 6 layers, d_model 384, context 256), AdamW, cosine to lr/10 over 2,500 steps",
    model=gpt_preset("llama-char"),
    train=TrainConfig(
        steps=2500, batch_size=64, log_every=500,
        optim=OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, clip_norm=1.0),
        schedule=ScheduleConfig(kind="cosine", warmup=100, min_lr_ratio=0.1),
        eval=EvalConfig(every=125), reg=RegularizationConfig(label_smoothing=0.0),
    ),
    data=TextDataConfig(text="tinyshakespeare/input.txt", tokenizer="char", sample_tokens=0),
    files=("data.text",),
    quick=("model.n_layers=1", "model.n_heads=2", "model.n_kv_heads=1", "model.d_model=32", "model.d_ff=64", "model.context=32",
           "train.steps=20", "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=10", "train.log_every=10"),
))
