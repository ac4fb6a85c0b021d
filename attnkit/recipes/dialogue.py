"""Dialogue recipes: a DialoGPT-style model (Zhang et al. 2020) on tiny Shakespeare's speaker turns."""

from __future__ import annotations

from attnkit.models.gpt import gpt_preset
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig
from attnkit.training.dialogue import DialogueDataConfig

register(Recipe(
    name="shakespeare-dialogue",
    task="dialogue",
    summary="tiny Shakespeare's speeches as multi-turn dialogue (NAME: speech, one turn each), characters: the char-shakespeare "
            "GPT (6 layers, d_model 384, context 256) over windows of whole turns, loss on the responses, 2,500 steps of 64",
    model=gpt_preset("char-shakespeare"),
    train=TrainConfig(
        steps=2500, batch_size=64, log_every=100,
        optim=OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, clip_norm=1.0),
        schedule=ScheduleConfig(kind="cosine", warmup=100, min_lr_ratio=0.1),
        eval=EvalConfig(every=250), reg=RegularizationConfig(label_smoothing=0.0),
    ),
    data=DialogueDataConfig(text="tinyshakespeare/input.txt", format="play", tokenizer="char"),
    files=("data.text",),
    quick=("model.n_layers=1", "model.n_heads=2", "model.d_model=32", "model.context=64", "data.max_turns=300", "train.steps=10",
           "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=5", "train.log_every=5"),
))
