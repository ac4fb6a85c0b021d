"""Long Range Arena recipes: ListOps (Tay et al. 2020, section 3.1) with a small encoder classifier."""

from __future__ import annotations

from attnkit.models.encoder_classifier import classifier_preset
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.runs.listops import ListOpsRunDataConfig
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig

register(Recipe(
    name="listops-small",
    task="listops",
    summary="ListOps at LRA's sizes (96,000 training expressions of 500-2,000 tokens): the listops-small classifier "
            "(4 layers, d_model 128, full attention, mean pooling), AdamW lr 1e-3, 2,469 steps of 32; test split scored",
    figure="test accuracy 38.00 (one run; LRA's Transformer 36.37) on one H100",
    model=classifier_preset("listops-small"),
    # LRA's optimizer with a higher peak rate for the smaller model: 10% warm-up, linear decay, four evaluations
    train=TrainConfig(
        steps=2469, batch_size=32, log_every=50,
        optim=OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01, clip_norm=1.0),
        schedule=ScheduleConfig(kind="linear", warmup=246), eval=EvalConfig(every=617, metric="accuracy", mode="max"),
        reg=RegularizationConfig(label_smoothing=0.0),
    ),
    data=ListOpsRunDataConfig(),
    # the listops-tiny preset's sizes on expressions of 10-60 tokens
    quick=("model.d_model=32", "model.n_heads=2", "model.n_layers=2", "model.d_ff=64", "model.dropout=0", "model.max_len=512",
           "data.train_size=200", "data.valid_size=32", "data.test_size=32", "data.min_len=10", "data.max_len=60", "data.pad_to=16",
           "data.workers=1", "train.steps=6", "train.batch_size=8", "train.schedule.warmup=1", "train.eval.every=3",
           "train.log_every=3"),
))
