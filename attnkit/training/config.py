"""The training recipe as a config, nested by concern (defaults: Vaswani et al. 2017, sections 5.3-5.4).

``TrainConfig`` holds the length of the run, the batch, seeds, device and file cadence; the
optimizer (:class:`OptimConfig`), the learning-rate schedule (:class:`ScheduleConfig`), how
steps execute (:class:`ExecutionConfig`), evaluation (:class:`EvalConfig`) and regularisation
(:class:`RegularizationConfig`) each have their own group, reached as ``train.optim.lr``,
``train.schedule.warmup``, ``train.execution.cuda_graphs``, ``train.eval.every``,
``train.reg.label_smoothing``; ``train.exposure.kind`` picks a remedy for exposure bias
(:mod:`attnkit.training.exposure`). A key of the former flat layout (``train.lr``) is refused with
an error naming its new place (``TrainConfig.moved``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.training.exposure import ExposureConfig

T = TypeVar("T", bound="TrainConfig")

DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"
MAX_BATCH = 1 << 20  # rows of one optimizer step (batch_size x grad_accum); a typo of 10^11 would exhaust memory building it
MAX_WORKERS = 256  # data-loading processes per training process; a typo of 10^4 would fork the machine to a halt


def is_device_name(name: str) -> bool:
    """True for the device names attnkit accepts: ``auto``, ``cpu``, ``mps``, ``cuda`` and ``cuda:N``."""
    return re.fullmatch(r"auto|cpu|mps|cuda(:[0-9]+)?", name) is not None


@dataclass(frozen=True, kw_only=True)
class OptimConfig(Config):
    """The optimizer: Adam (Kingma and Ba 2015) or AdamW (Loshchilov and Hutter 2019, decoupled
    weight decay), with gradient clipping and layer-wise learning-rate decay.

    ``lr`` is the peak learning rate of the ``linear``/``cosine``/``constant`` schedules and the
    multiplier of the Noam formula for ``noam`` (1.0 = the paper's eq. 3). The defaults are the
    paper's Adam(beta1=0.9, beta2=0.98, eps=1e-9) (Vaswani et al. 2017, section 5.3).
    ``weight_decay`` is L2 regularisation folded into the gradient for ``adam``, decoupled from
    it for ``adamw``. ``clip_norm > 0`` rescales the gradient to that global L2 norm at most
    (Pascanu et al. 2013). ``layer_decay < 1`` is ELECTRA's layer-wise learning-rate decay
    (Clark et al. 2020, appendix, fine-tuning details): encoder layer ``i`` of ``L`` trains at
    ``lr * layer_decay^(L - i)``, the embeddings at ``lr * layer_decay^(L + 1)``, pooler and head
    at ``lr`` (:func:`~attnkit.training.optim.layer_depths`; it needs separate layers, not
    ALBERT's shared one).
    """

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-9
    weight_decay: float = 0.0
    layer_decay: float = 1.0
    clip_norm: float = 0.0

    def validate(self) -> None:
        check(self.lr > 0, "lr", self.lr, "must be positive")
        check(all(0.0 <= b < 1.0 for b in self.betas), "betas", self.betas, "each must be in [0, 1)")
        check(self.eps > 0, "eps", self.eps, "must be positive")
        check(self.weight_decay >= 0, "weight_decay", self.weight_decay, "must be >= 0")
        check(0.0 < self.layer_decay <= 1.0, "layer_decay", self.layer_decay, "must be in (0, 1] (1 disables layer-wise lr decay)")
        check(self.clip_norm >= 0, "clip_norm", self.clip_norm, "must be >= 0 (0 disables clipping)")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig(Config):
    """The learning-rate schedule (:mod:`attnkit.training.schedules`).

    ``noam`` is the paper's eq. 3, ``lr * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)``
    (Vaswani et al. 2017, section 5.3); ``linear`` warms up linearly for ``warmup`` steps then
    decays linearly to zero (BERT, Devlin et al. 2019, appendix A.2); ``cosine`` decays along a
    half cosine to ``min_lr_ratio * lr`` after the warm-up (Loshchilov and Hutter 2017, SGDR,
    eq. 5, one cycle); ``constant`` holds ``lr`` after the warm-up.
    """

    kind: Literal["noam", "linear", "cosine", "constant"] = "noam"
    warmup: int = 4000
    min_lr_ratio: float = 0.0

    def validate(self) -> None:
        check(self.warmup >= 0, "warmup", self.warmup, "must be >= 0")
        check(0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio", self.min_lr_ratio, "must be in [0, 1] (the cosine floor as a fraction of lr)")


@dataclass(frozen=True, kw_only=True)
class ExecutionConfig(Config):
    """How a step executes: numeric precision, compilation, CUDA graphs, activation checkpointing
    and data parallelism over several processes.

    ``precision="auto"`` trains under bf16 autocast on CUDA and in fp32 elsewhere; ``bf16`` and
    ``fp32`` force one; ``fp16`` trains under float16 autocast with dynamic loss scaling
    (Micikevicius et al. 2018, Mixed Precision Training, section 3.2; ``torch.amp.GradScaler``),
    for GPUs without bf16: the loss is multiplied by a scale before the backward pass, the
    gradients divided by it before the update, and a step whose gradients overflow is skipped
    and the scale halved. ``checkpointing`` recomputes each layer's activations in the backward
    pass instead of storing them (Chen et al. 2016, Training Deep Nets with Sublinear Memory
    Cost; :func:`~attnkit.training.distributed.apply_activation_checkpointing`). ``chunked_loss``
    computes a language model's output layer and cross-entropy ``loss_chunk`` tokens at a time,
    each chunk recomputed in the backward pass, so the logits over the vocabulary are never whole
    (:mod:`attnkit.objectives.chunked_ce`; ``train lm``). ``parallel``
    is how the processes ``torchrun`` starts share the work
    (:mod:`attnkit.training.distributed`): ``ddp`` replicates the model and averages gradients
    (DistributedDataParallel), ``fsdp`` shards parameters, gradients and optimizer state
    (FSDP2, ``fully_shard``; Zhao et al. 2023), ``none`` is one process, ``auto`` is ``ddp``
    under ``torchrun`` with several processes and ``none`` otherwise; with several processes the
    steps run without ``cuda_graphs`` (the gradient exchange is not recorded). ``compile`` runs the forward under ``torch.compile`` with
    ``compile_mode``; ``reduce-overhead`` and ``max-autotune`` replay CUDA graphs (one recording
    per batch shape), for steps limited by the host, not the GPU. ``cuda_graphs`` records the
    whole optimizer step (forward, backward, clipping, Adam) as one CUDA graph per batch shape
    and replays it (:mod:`attnkit.training.graphs`): for steps limited by the host on a GPU, with
    tasks whose step reads no device value on the host. It needs a CUDA device; with ``compile`` (``compile_mode``
    ``default`` or ``max-autotune-no-cudagraphs``) the recorded step runs the compiled forward and backward, whose
    kernels are fused, and no kernel is launched from the host between replays; the modes that record their own
    graphs are refused beside it. ``workers > 0`` builds the training batches of a task that tokenises or masks
    them on the fly (masked-LM pretraining, ``train lm``) in that many ``DataLoader`` worker
    processes per training process, with prefetching (:mod:`attnkit.data.workers`); each batch's
    random draws are seeded by ``(seed, epoch, batch index)``, so the batches are those of
    ``workers=0``, which builds them in the training process.
    """

    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    cuda_graphs: bool = False
    checkpointing: bool = False
    chunked_loss: bool = False
    loss_chunk: int = 4096
    parallel: Literal["auto", "none", "ddp", "fsdp"] = "auto"
    workers: int = 0

    def validate(self) -> None:
        check(0 <= self.workers <= MAX_WORKERS, "workers", self.workers,
              f"must be in 0 ... {MAX_WORKERS} (DataLoader worker processes; 0 builds batches in the training process)")
        check(self.loss_chunk >= 1, "loss_chunk", self.loss_chunk, "must be >= 1 (tokens per chunk of the chunked loss)")
        check(self.compile or self.compile_mode == "default", "compile_mode", self.compile_mode, "needs compile=true")
        check(not (self.cuda_graphs and self.precision == "fp16"), "precision", self.precision,
              "fp16's loss scaling reads the gradients on the host at every step, which a step recorded as a CUDA graph cannot; "
              "use bf16 or cuda_graphs=false")
        check(not (self.parallel == "fsdp" and self.precision == "fp16"), "precision", self.precision,
              "with parallel=fsdp the mixed precision is FSDP's bf16 parameters; use bf16, or parallel=ddp for fp16")


@dataclass(frozen=True, kw_only=True)
class EvalConfig(Config):
    """Evaluation on the validation data, model selection and early stopping.

    Every ``every`` steps (0: never) the task evaluates; the model with the best ``metric``
    (lowest for ``mode="min"``, highest for ``"max"``) is saved. ``stop_at`` ends training once
    the metric reaches that value; ``patience > 0`` ends it after that many evaluations without
    improvement (early stopping, Prechelt 1998). ``precision="fp32"`` runs the evaluations (and
    so the choice of the best model) without autocast, as ``attnkit eval`` scores a saved model;
    ``"train"`` evaluates in the training precision, where an example close to the decision
    boundary can land on the other side.
    """

    every: int = 0
    metric: str = "loss"
    mode: Literal["min", "max"] = "min"
    stop_at: float | None = None
    patience: int = 0
    precision: Literal["train", "fp32"] = "train"

    def validate(self) -> None:
        check(self.every >= 0, "every", self.every, "must be >= 0 (0: no evaluation)")
        check(self.patience >= 0, "patience", self.patience, "must be >= 0 (0: no early stopping)")


@dataclass(frozen=True, kw_only=True)
class RegularizationConfig(Config):
    """Regularisation beyond dropout (dropout rates belong to the model config).

    ``label_smoothing`` is the paper's label smoothing, ``eps_ls = 0.1`` (Vaswani et al. 2017,
    section 5.4; Szegedy et al. 2016, section 7). ``rdrop > 0`` is R-Drop (Liang et al. 2021,
    eq. 3) with ``alpha = rdrop``: each batch goes through the model twice (as one batch of twice
    the rows, so with different dropout masks) and the loss adds ``alpha`` times the symmetric KL
    divergence of the two output distributions to their mean cross-entropy
    (:func:`~attnkit.objectives.rdrop.rdrop_loss`; the paper sums the two cross-entropies, so its
    alpha is ``2 * rdrop``); fine-tuning ``classify`` and ``ner`` only, other tasks reject it.
    ``ema_decay > 0`` keeps an exponential moving average of the weights (Polyak and Juditsky
    1992), updated after every optimizer step; evaluation and the saved best model use the average.
    """

    nonfinite: ClassVar[tuple[str, ...]] = ("rdrop",)  # refused by validate() with its own message

    label_smoothing: float = 0.1
    rdrop: float = 0.0
    ema_decay: float = 0.0

    def validate(self) -> None:
        check(0.0 <= self.label_smoothing < 1.0, "label_smoothing", self.label_smoothing, "must be in [0, 1)")
        check(0.0 <= self.rdrop < math.inf, "rdrop", self.rdrop, "must be a finite number >= 0 (0 disables R-Drop)")
        check(0.0 <= self.ema_decay < 1.0, "ema_decay", self.ema_decay, "must be in [0, 1) (0 disables the weight average)")


@dataclass(frozen=True, kw_only=True)
class TrainConfig(Config):
    """How to train: ``steps`` optimizer steps of ``batch_size * grad_accum`` examples.

    ``seed`` fixes the order of the training batches and the dropout masks; ``init_seed`` fixes
    the weights a fine-tuning command creates fresh (a new classification, tagging or QA head), so
    runs that differ only in ``seed`` start from one point: the ingredients of a model soup
    (Wortsman et al. 2022; ``attnkit average``). Every ``log_every`` steps a record goes to
    ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard event files with ``tensorboard``, which
    needs the ``tensorboard`` extra); every ``save_every`` steps a checkpoint, the newest
    ``keep_checkpoints`` kept. The groups: ``optim``, ``schedule``, ``execution``, ``eval``, ``reg``, ``exposure``.
    """

    moved: ClassVar[dict[str, str]] = {
        "optimizer": "optim.name",
        "lr": "optim.lr",
        "betas": "optim.betas",
        "eps": "optim.eps",
        "weight_decay": "optim.weight_decay",
        "layer_decay": "optim.layer_decay",
        "clip_norm": "optim.clip_norm",
        "warmup": "schedule.warmup",
        "min_lr_ratio": "schedule.min_lr_ratio",
        "precision": "execution.precision",
        "compile": "execution.compile",
        "compile_mode": "execution.compile_mode",
        "cuda_graphs": "execution.cuda_graphs",
        "eval_every": "eval.every",
        "metric": "eval.metric",
        "metric_mode": "eval.mode",
        "stop_at": "eval.stop_at",
        "early_stopping_patience": "eval.patience",
        "eval_precision": "eval.precision",
        "label_smoothing": "reg.label_smoothing",
        "rdrop": "reg.rdrop",
        "ema_decay": "reg.ema_decay",
    }

    steps: int = 1000
    batch_size: int = 64
    grad_accum: int = 1
    seed: int = 0
    init_seed: int = 0
    device: str = "auto"
    log_every: int = 10
    save_every: int = 0
    keep_checkpoints: int = 5
    tensorboard: bool = False
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    reg: RegularizationConfig = field(default_factory=RegularizationConfig)
    exposure: ExposureConfig = field(default_factory=ExposureConfig)

    def validate(self) -> None:
        for name in ("steps", "batch_size", "grad_accum"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        for name in ("save_every", "keep_checkpoints", "log_every"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        for name in ("seed", "init_seed"):  # torch.manual_seed takes a 64-bit integer
            check(0 <= getattr(self, name) < 2**63, name, getattr(self, name), "must be in 0 ... 2^63 - 1")
        check(self.batch_size * self.grad_accum <= MAX_BATCH, "batch_size", self.batch_size,
              f"with grad_accum={self.grad_accum} is above the limit of {MAX_BATCH:,} rows a step")
        check(is_device_name(self.device), "device", self.device, f"use {DEVICE_FORMS}")
        if self.schedule.kind in ("linear", "cosine"):
            check(self.steps > self.schedule.warmup, "schedule.warmup", self.schedule.warmup,
                  f"must be below steps={self.steps} for the {self.schedule.kind} schedule")
        if self.eval.stop_at is not None:
            check(self.eval.every > 0, "eval.stop_at", self.eval.stop_at, "needs eval.every > 0 (it is checked at evaluations)")
        ex = self.execution
        check(not (ex.cuda_graphs and ex.compile and ex.compile_mode in ("reduce-overhead", "max-autotune")), "execution.cuda_graphs",
              ex.cuda_graphs, f"excludes execution.compile_mode={ex.compile_mode} (torch.compile's own CUDA graphs of the forward); "
              "record the whole step with compile_mode=default, or set cuda_graphs=false")
        check(not (self.execution.parallel == "fsdp" and self.reg.ema_decay > 0), "reg.ema_decay", self.reg.ema_decay,
              "is not supported with execution.parallel=fsdp (the average would be sharded too); use parallel=ddp or ema_decay=0")
        check(self.exposure.kind == "none" or not self.execution.cuda_graphs, "exposure.kind", self.exposure.kind,
              "changes the decoder's inputs at every step, which a recorded step cannot; set train.execution.cuda_graphs=false")

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
        """As :meth:`Config.from_dict`; the former flat ``schedule="noam"`` names its new key."""
        if isinstance(data, dict) and isinstance(data.get("schedule"), str):
            raise ConfigError(f"config key {prefix + 'schedule'!r} is a group now: write {prefix}schedule.kind={data['schedule']}")
        if isinstance(data, dict) and isinstance(data.get("exposure"), str):
            raise ConfigError(f"config key {prefix + 'exposure'!r} is a group: write {prefix}exposure.kind={data['exposure']}")
        return super().from_dict(data, prefix=prefix)
