"""Training: optimizers, schedules, the loop, checkpoints and tasks."""

from attnkit.training.checkpoint import latest_checkpoint, list_checkpoints, load_trainer_state, save_checkpoint
from attnkit.training.config import (
    EvalConfig, ExecutionConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig,
)
from attnkit.training.loop import Trainer, TrainResult, pick_device, plot_losses
from attnkit.training.optim import build_optimizer
from attnkit.training.schedules import build_scheduler, noam
from attnkit.training.tasks import Seq2SeqTask, Task, translate_strings
from attnkit.training.averaging import average_checkpoints, save_averaged
from attnkit.training.translation import TranslationConfig, TranslationTask, translate_lines

__all__ = [
    "EvalConfig", "ExecutionConfig", "OptimConfig", "RegularizationConfig", "ScheduleConfig",
    "Seq2SeqTask", "Task", "TrainConfig", "TrainResult", "Trainer", "build_optimizer", "build_scheduler",
    "latest_checkpoint", "list_checkpoints", "load_trainer_state", "noam", "pick_device", "plot_losses",
    "save_checkpoint", "translate_strings",
    "TranslationConfig", "TranslationTask", "average_checkpoints", "save_averaged", "translate_lines",
]
