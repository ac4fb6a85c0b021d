"""The training recipe as a config (defaults: the paper's section 5.3-5.4)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from attnkit.config import Config, check


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """How to train. Defaults follow Vaswani et al. 2017: Adam(0.9, 0.98, 1e-9), Noam schedule
    with 4000 warm-up steps, label smoothing 0.1.

    ``stop_at`` ends training once the validation ``metric`` reaches that value.
    ``compile`` runs the forward under ``torch.compile`` with ``compile_mode``; ``reduce-overhead``
    and ``max-autotune`` replay CUDA graphs (one recording per batch shape), for steps limited by
    the host, not the GPU (short rows; ``benchmarks/bert_speed.py``'s SST-2 epoch, BENCHMARKS.md).
    ``cuda_graphs`` records the whole optimizer step (forward, backward, clipping, Adam) as one CUDA
    graph per batch shape and replays it (:mod:`attnkit.training.graphs`): for steps limited by the
    host on a GPU, with tasks whose step reads no device value on the host (translation: the
    Multi30k recipe, BENCHMARKS.md). It needs a CUDA device and excludes ``compile``.
    ``ema_decay > 0`` keeps an exponential moving average of the weights (Polyak averaging),
    updated after every optimizer step; evaluation and the saved best model use the average.
    ``layer_decay < 1`` is ELECTRA's layer-wise learning-rate decay (Clark et al. 2020, appendix,
    fine-tuning details): encoder layer ``i`` of ``L`` trains at ``lr * layer_decay^(L - i)``, the
    embeddings at ``lr * layer_decay^(L + 1)``, pooler and head at ``lr``
    (:func:`~attnkit.training.optim.layer_depths`; it needs separate layers, not ALBERT's shared one).
    ``rdrop > 0`` is R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks",
    eq. 3) with ``alpha = rdrop``: each batch goes through the model twice (as one batch of twice
    the rows, so with different dropout masks) and the loss adds ``alpha`` times the symmetric KL
    divergence of the two output distributions to their mean cross-entropy
    (:func:`~attnkit.objectives.rdrop.rdrop_loss`; the paper sums the two cross-entropies, so its
    alpha is ``2 * rdrop``). Fine-tuning ``classify`` and ``ner`` only; other tasks reject it.
    ``seed`` fixes the order of the training batches and the dropout masks; ``init_seed`` fixes
    the weights a fine-tuning command creates fresh (a new classification, tagging or QA head), so
    runs that differ only in ``seed`` start from one point: the ingredients of a model soup
    (Wortsman et al. 2022; ``attnkit average``).
    ``eval_precision="fp32"`` runs the evaluations (and so the choice of the best model) without
    autocast, as ``attnkit eval`` scores a saved model; ``"train"`` (default) evaluates in the
    training precision (bf16 on a GPU with ``precision="auto"``), faster, where a borderline
    example can land on the other side (one SST-2 sentence in 11 of 33 runs, BENCHMARKS.md).
    ``lr`` is the peak learning rate of the ``linear``/``cosine``/``constant`` schedules and
    the multiplier of the Noam formula for ``noam`` (1.0 = the paper).
    """

    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.0
    schedule: Literal["noam", "linear", "cosine", "constant"] = "noam"
    warmup: int = 4000
    min_lr_ratio: float = 0.0
    ema_decay: float = 0.0
    layer_decay: float = 1.0
    label_smoothing: float = 0.1
    rdrop: float = 0.0
    clip_norm: float = 0.0
    eval_every: int = 0
    save_every: int = 0
    keep_checkpoints: int = 5
    early_stopping_patience: int = 0
    metric: str = "loss"
    metric_mode: Literal["min", "max"] = "min"
    stop_at: float | None = None
    log_every: int = 10
    seed: int = 0
    init_seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    eval_precision: Literal["train", "fp32"] = "train"
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    cuda_graphs: bool = False
    device: str = "auto"

    def validate(self) -> None:
        for name in ("steps", "batch_size", "grad_accum"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        for name in ("warmup", "eval_every", "save_every", "keep_checkpoints", "early_stopping_patience", "log_every"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        check(self.lr > 0, "lr", self.lr, "must be positive")
        check(all(0.0 <= b < 1.0 for b in self.betas), "betas", self.betas, "each must be in [0, 1)")
        check(self.eps > 0, "eps", self.eps, "must be positive")
        check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1] (the cosine floor as a fraction of lr)")
        check(0.0 <= self.ema_decay < 1.0, "ema_decay", self.ema_decay, "must be in [0, 1) (0 disables the weight average)")
        check(0.0 < self.layer_decay <= 1.0, "layer_decay", self.layer_decay, "must be in (0, 1] (1 disables layer-wise lr decay)")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", self.label_smoothing, "must be in [0, 1)")
        check(0.0 <= self.rdrop < math.inf, "rdrop", self.rdrop, "must be a finite number >= 0 (0 disables R-Drop)")
        if self.stop_at is not None:
            check(self.eval_every > 0, "stop_at", self.stop_at, "needs eval_every > 0 (it is checked at evaluations)")
        check(self.compile or self.compile_mode == "default", "compile_mode", self.compile_mode, "needs compile=true")
        check(not (self.cuda_graphs and self.compile), "cuda_graphs", self.cuda_graphs,
              "excludes compile=true (compile_mode=reduce-overhead is torch.compile's own CUDA graphs); choose one")
        check(self.clip_norm >= 0, "clip_norm", self.clip_norm, "must be >= 0 (0 disables clipping)")
        check(self.device in ("auto", "cpu", "mps") or self.device.startswith("cuda"), "device", self.device, "use auto, cpu, cuda, cuda:N or mps")
        if self.schedule in ("linear", "cosine"):
            check(self.steps > self.warmup, "warmup", self.warmup, f"must be below steps={self.steps} for the {self.schedule} schedule")
