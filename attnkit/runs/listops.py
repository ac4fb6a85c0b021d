"""The Long Range Arena ListOps job: ``attnkit train listops`` with any attention kernel.

Tay et al. 2020 (Long Range Arena, section 3.1): sequences of 500-2,000 tokens of nested
list operations (``MAX``, ``MIN``, ``MED``, ``SM``) over digits; the model reads the whole
expression and classifies its value (10 classes). The data are generated from the task's
definition (:mod:`attnkit.data.listops`) and cached; the model is an
:class:`~attnkit.models.EncoderClassifier` (mean pooling, a linear head) whose attention kernel
gets ListOps parameters (:data:`~attnkit.training.listops.ATTENTION_DEFAULTS`) for the keys the
run leaves unset. The best model by validation accuracy is kept and, after training, scored on
the test split (``test_accuracy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnkit.config import Config
from attnkit.models.base import check_size
from attnkit.models.encoder_classifier import EncoderClassifier
from attnkit.runs.base import Job, Log, Prepared
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig
from attnkit.training.listops import ListOpsDataConfig
from attnkit.training.loop import TrainResult, Trainer, pick_device


@dataclass(frozen=True, kw_only=True)
class ListOpsRunDataConfig(ListOpsDataConfig):
    """:class:`~attnkit.training.listops.ListOpsDataConfig` and where the generated splits are cached
    (``cache``: a directory; None: the run's output directory)."""

    cache: str | None = None


def lra_train() -> TrainConfig:
    """LRA's ListOps recipe: 5,000 steps of 32 sequences, AdamW (0.9, 0.98), lr 5e-4, weight decay 0.01,
    500 warm-up steps then linear decay, clipping 1.0; the best model by validation accuracy."""
    return TrainConfig(
        steps=5000, batch_size=32, log_every=50,
        optim=OptimConfig(name="adamw", lr=5e-4, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01, clip_norm=1.0),
        schedule=ScheduleConfig(kind="linear", warmup=500), eval=EvalConfig(every=500, metric="accuracy", mode="max"),
        reg=RegularizationConfig(label_smoothing=0.0),
    )


def with_listops_attention(m: Any) -> Any:
    """``m`` with its attention parameters filled from the ListOps defaults of its kernel (the run's own win)."""
    from attnkit.training.listops import attention_config

    params = attention_config(m.attention.kind, m.max_len, m.attention.params)["params"]
    return m if params == m.attention.params else m.replace(attention=m.attention.replace(params=params))


def raise_recompile_limit() -> None:
    """Sparse kernels compile FlexAttention once per padded length (up to 16 of them at LRA sizes)."""
    if not torch.cuda.is_available():
        return  # nothing compiles; importing torch._dynamo alone takes seconds
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(64, getattr(torch._dynamo.config, name)))


class ListOpsJob(Job):
    """``attnkit train listops``: a sequence classifier on ListOps; validation accuracy picks the model, the test split scores it."""

    task = "listops"
    summary = "Long Range Arena ListOps with any attention kernel"
    metrics = ("loss", "accuracy")
    # where the data are cached, how many processes generate them and the evaluation batch change nothing that is learned
    safe_on_resume = ("data.cache", "data.workers", "data.eval_batch_size")

    def __init__(self) -> None:
        from attnkit.models.encoder_classifier import EncoderClassifierConfig

        self.config_types = {"model": EncoderClassifierConfig, "train": TrainConfig, "data": ListOpsRunDataConfig}

    def defaults(self) -> dict[str, Config]:
        from attnkit.models.encoder_classifier import classifier_preset

        return {"model": classifier_preset("lra-listops"), "train": lra_train(), "data": ListOpsRunDataConfig()}

    def check(self, configs: dict[str, Config]) -> None:
        from attnkit.training.listops import check_configs

        check_configs(with_listops_attention(configs["model"]), configs["data"])  # type: ignore[arg-type]

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.training.listops import ListOpsTask, build_model, make_splits

        m, t, d = with_listops_attention(configs["model"]), configs["train"], configs["data"]
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]  # the initial weights are part of a reproducible run
        check_size(EncoderClassifier, m, pick_device(t.device), copies=4)  # type: ignore[attr-defined]
        model = build_model(m)  # before the data: a kernel's refusal of its parameters comes first
        raise_recompile_limit()
        splits = make_splits(d, cache_dir=d.cache or out, log=log)  # type: ignore[arg-type, attr-defined]
        cls = m.pool == "cls"
        device = pick_device(t.device)  # type: ignore[attr-defined]
        task = ListOpsTask(splits["train"], splits["validation"], batch_size=t.batch_size, eval_batch_size=d.eval_batch_size,  # type: ignore[attr-defined]
                           pad_to=d.pad_to, bucket_size=d.bucket_size, cls=cls, device=device)  # type: ignore[attr-defined]
        log(f"model: {model.num_parameters() / 1e6:.2f}M parameters, attention {m.attention.kind}"
            f"{' ' + str(m.attention.params) if m.attention.params else ''} on {device}")
        return Prepared(model=model, task=task, configs={**configs, "model": m},
                        state={"test": splits["test"], "sizes": {k: len(s) for k, s in splits.items()}, "cls": cls, "device": device})

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        from attnkit.models.base import load
        from attnkit.training.listops import evaluate_split

        d, m, s = prepared.configs["data"], prepared.configs["model"], prepared.state
        best = load(out / "model", map_location=s["device"]).eval()
        with torch.no_grad(), trainer.autocast():
            test = evaluate_split(best, s["test"], batch_size=d.eval_batch_size, pad_to=d.pad_to, cls=s["cls"], device=s["device"])  # type: ignore[attr-defined]
        log(f"test accuracy {test['accuracy']:.4f} (loss {test['loss']:.4f}) on {len(s['test']):,} examples")
        return {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "best_validation_accuracy": result.best,
                "best_step": result.best_step, "validation": result.evals, "attention": m.attention.to_dict(),  # type: ignore[attr-defined]
                "data": s["sizes"]}


JOBS = {"listops": ListOpsJob}
