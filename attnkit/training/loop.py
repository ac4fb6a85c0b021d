"""The training loop, readable top to bottom.

One optimizer step = ``grad_accum`` micro-batches. The loss is averaged over target
tokens across all micro-batches of the step (each micro-batch's mean is weighted by its
token count), then gradients are clipped, Adam steps and the schedule advances.

With ``reg.ema_decay > 0`` the trainer also keeps an exponential moving average of the weights
(Polyak and Juditsky 1992): after optimizer step ``s`` each average moves towards the weights
by ``1 - d_s`` with ``d_s = min(reg.ema_decay, s / (s + 1))`` (a plain running mean until the
decay takes over, so the random initial weights do not linger). Evaluation runs on the
averaged weights and the best model saved is the average; training continues from the raw
weights, and checkpoints hold both.

With ``execution.cuda_graphs`` the step (:meth:`Trainer._step_body`) is recorded as a CUDA graph per batch
shape and replayed (:mod:`attnkit.training.graphs`); the schedule, the weight average, logging,
evaluation and checkpoints stay outside it.

Progress: every ``log_every`` steps a record (loss, learning rate, input tokens and tokens per
second) goes to ``metrics.jsonl``, ``metrics.csv`` and, with ``tensorboard``, TensorBoard event
files; each evaluation's metrics are printed as one line and recorded as ``eval/NAME``. Tokens
per second count the tokens fed to the model (``task.input_tokens(batch)`` where the task has it,
else the loss's token count) over the training time of the window: evaluations and checkpoints
are timed and left out.

Several processes (``torchrun``; ``execution.parallel``): the model is wrapped by DDP or sharded
by FSDP2 (:mod:`attnkit.training.distributed`), each process takes its share of every step's
micro-batches, gradients are exchanged once per optimizer step and the loss is normalised by the
token count of the global batch; process 0 logs and writes files. ``execution.checkpointing``
recomputes each layer's activations in the backward pass; ``precision="fp16"`` scales the loss
(``torch.amp.GradScaler``).

Resuming (``Trainer(..., resume=True)``) restores the weights, the optimizer and scheduler
state, the RNG states and the position in the data, so ``N`` steps + resume + ``N`` steps
reproduces ``2N`` straight steps exactly on CPU.

On CUDA, a task whose batches change length from step to step (``task.varying_lengths``:
fine-tuning, QA, MLM, translation) turns cuDNN attention off for the process: it builds an
execution plan for every new shape, far slower than the flash and memory-efficient SDPA kernels
need for theirs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from attnkit.data.workers import check_worker_task
from attnkit.errors import CheckpointError, ConfigError, DivergedError
from attnkit.io import json_lines
from attnkit.models.base import PretrainedModel, check_fits, load_state_strict, load_weights
from attnkit.training.checkpoint import latest_checkpoint, load_trainer_state, remove_orphans, save_checkpoint
from attnkit.training.config import DEVICE_FORMS, TrainConfig, is_device_name
from attnkit.training.distributed import Parallel, apply_activation_checkpointing
from attnkit.training.exposure import check_exposure
from attnkit.training.graphs import GraphedSteps
from attnkit.training.optim import build_optimizer, device_lrs, scheduled_lr
from attnkit.training.schedules import build_scheduler
from attnkit.training.tasks import Task

log = logging.getLogger(__name__)


def pick_device(name: str = "auto", *, what: str = "device") -> torch.device:
    """The torch device ``name`` names, checked against this machine; ``auto`` picks cuda, then mps, then cpu.

    Args:
        name: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        what: the setting or flag that gave ``name``, for the error message (``train.device``).

    Returns:
        The device.

    Raises:
        ConfigError: ``name`` is not one of those forms, or names a device this machine lacks.
    """
    if not isinstance(name, str) or not is_device_name(name):
        raise ConfigError(f"{what}={name!r} is not a device; use {DEVICE_FORMS}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"{what}={name!r} but no CUDA device is available; use cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{what}={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return torch.device(name)
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ConfigError(f"{what}='mps' but no MPS device is available; use cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_for(device: torch.device, precision: str, cache: bool = True) -> Any:
    """The autocast context for ``precision`` on ``device``: bf16 for ``bf16``, and for ``auto`` on CUDA;
    float16 for ``fp16``; none otherwise. ``cache=False``: no cast cache, as in a step recorded as a CUDA graph."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16, cache_enabled=cache)
    return nullcontext()


@dataclass
class TrainResult:
    step: int
    losses: list[float] = field(default_factory=list)  # training loss of every step run in this call
    evals: list[dict[str, float]] = field(default_factory=list)
    best: float | None = None
    best_step: int | None = None
    stopped_early: bool = False
    seconds: float = 0.0


class Trainer:
    """Train ``model`` on ``task`` following ``config``, writing everything under ``out``.

    Files: ``metrics.jsonl`` (one JSON record per log/eval) and ``metrics.csv`` (the same
    records, a column for every key seen), ``tensorboard/`` (with ``config.tensorboard`` and the
    ``tensorboard`` package), ``loss.png`` (if matplotlib is installed), ``checkpoints/`` (see
    :mod:`attnkit.training.checkpoint`), ``model/`` (the best model by the validation metric, or
    the last one without evaluation).

    Args:
        hooks: callables ``hook(trainer, step, record)`` run after each logged step.
        write: where the line of each evaluation's metrics goes; default ``tqdm.write`` with a
            progress bar (so the bar is not broken), else ``print``.
    """

    def __init__(
        self,
        model: PretrainedModel,
        task: Task,
        config: TrainConfig,
        out: str | Path,
        *,
        tokenizer: Any = None,
        progress: bool = True,
        hooks: list[Callable[["Trainer", int, dict[str, Any]], None]] | None = None,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.model, self.task, self.config, self.out = model, task, config, Path(out)
        self.tokenizer, self.progress, self.hooks = tokenizer, progress, hooks or []
        self.write = write if write is not None else _writer(progress)
        self._csv_keys: list[str] = []
        self._board: Any = None  # a torch.utils.tensorboard SummaryWriter while fit() runs, with config.tensorboard
        _check_rdrop(task, config.reg.rdrop)
        check_worker_task(task, config.execution.workers)
        check_exposure(task, config.exposure)
        self.device = pick_device(config.device, what="train.device")
        check_fits(self.model, self.device, "the model", copies=1 if config.execution.parallel == "fsdp" else 4, fix="choose a smaller model or another train.device")
        self.model.to(self.device)
        if config.execution.checkpointing:
            apply_activation_checkpointing(model)
        # DDP wraps the model; FSDP shards it in place, so the optimizer is built after this
        self.parallel = Parallel.wrap(model, config.execution.parallel, config.execution.precision, self.device)
        if not self.parallel.is_main:  # process 0 prints and writes
            self.progress, self.write = False, lambda line: None
        if self.parallel.mode != "none" and config.execution.cuda_graphs:  # a speed strategy: what is computed stays
            self.write("train.execution.cuda_graphs: the gradient exchange between processes is not recorded; steps run without CUDA graphs")
            config = self.config = config.replace(execution=config.execution.replace(cuda_graphs=False))
        varying = getattr(task, "varying_lengths", False)
        if self.device.type == "cuda" and varying and torch.backends.cuda.cudnn_sdp_enabled():
            # cuDNN attention builds an execution plan for each new shape; flash / memory-efficient do not
            torch.backends.cuda.enable_cudnn_sdp(False)
            log.info("varying batch lengths: cuDNN attention turned off for this process (torch.backends.cuda.enable_cudnn_sdp)")
        c = config
        o, sch, ex = c.optim, c.schedule, c.execution
        if ex.cuda_graphs and self.device.type != "cuda":
            raise ConfigError(f"execution.cuda_graphs=true needs a CUDA device (training runs on {self.device}); "
                              "set train.execution.cuda_graphs=false or train on a GPU")
        self.optimizer = build_optimizer(model, o.name, 1.0 if sch.kind == "noam" else o.lr, o.betas, o.eps, o.weight_decay,
                                         o.layer_decay, capturable=ex.cuda_graphs)
        d_model = getattr(model.config, "d_model", None)
        self.scheduler = build_scheduler(
            self.optimizer, sch.kind, warmup=sch.warmup, total_steps=c.steps, d_model=d_model,
            factor=o.lr if sch.kind == "noam" else 1.0, min_ratio=sch.min_lr_ratio,
        )
        if ex.cuda_graphs:
            device_lrs(self.optimizer)
        self.step, self.epoch, self.batch_index = 0, 0, 0
        self.best: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        # a recorded step casts the weights itself at every replay: autocast's cast cache would outlive it
        self.autocast = lambda: autocast_for(self.device, ex.precision, cache=not ex.cuda_graphs)
        self.forward_model: nn.Module = self.parallel.module
        # fp16: created at the first step, scaled to its token count (see _step_body), or restored on resume
        self.scaler: torch.amp.GradScaler | None = None
        if ex.compile:
            # varying lengths: one graph for every shape from the start (else a second compile)
            kw: dict[str, Any] = {"dynamic": True} if varying else {}
            if ex.compile_mode != "default":
                kw["mode"] = ex.compile_mode
            self.forward_model = torch.compile(self.forward_model, **kw)
        self.compiled_graphs = ex.compile and ex.compile_mode in ("reduce-overhead", "max-autotune")  # torch.compile's own
        self.params = [p for p in model.parameters() if p.requires_grad]
        # the whole optimizer step recorded as CUDA graphs, one per batch shape (attnkit.training.graphs)
        self.graphed: GraphedSteps | None = GraphedSteps(self._step_body) if ex.cuda_graphs else None
        self.ema: list[torch.Tensor] | None = [p.detach().clone() for p in self.params] if c.reg.ema_decay > 0 else None

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "best": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "optimizer": self.parallel.optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "train_config": self.config.to_dict(),
            "micro_batches_per_step": self.config.grad_accum * self.parallel.size,
        }
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            state["ema"] = [e.detach().cpu() for e in self.ema]
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def resume(self) -> bool:
        """Restore the newest checkpoint under ``out``; return False if there is none."""
        path = latest_checkpoint(self.out)
        if path is None:
            return False
        state = load_trainer_state(path)
        self._check_global_batch(state, path)
        weights = {k: v.to(self.device) for k, v in load_weights(path / "model.safetensors").items()}
        self.parallel.load_model_state(self.model, weights, lambda m, w: load_state_strict(m, w, str(path)))
        self.parallel.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        if "scaler" in state and self.config.execution.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)
            self.scaler.load_state_dict(state["scaler"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.config.execution.cuda_graphs:  # the loaded groups hold host lrs
            device_lrs(self.optimizer)
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        if self.ema is not None:
            if "ema" not in state:
                raise CheckpointError(f"{path} holds no weight average; resume with the train.reg.ema_decay it was trained with")
            for e, saved in zip(self.ema, state["ema"]):
                e.copy_(saved)
        for k in ("step", "epoch", "batch_index", "best", "best_step", "bad_evals"):
            setattr(self, k, state[k])
        self.parallel.seed(self.config.seed, self.step)
        self._truncate_metrics(self.step)
        return True

    def _check_global_batch(self, state: dict[str, Any], path: Path) -> None:
        """A resumed run keeps the micro-batches of a step (``grad_accum`` times the processes), so
        that it may move to another number of processes and still see the same data."""
        saved = state.get("micro_batches_per_step", state["train_config"].get("grad_accum", 1))
        now = self.config.grad_accum * self.parallel.size
        if saved != now:
            p = self.parallel.size
            fix = f"set train.grad_accum={saved // p}" if saved % p == 0 else f"run on a number of processes dividing {saved}"
            raise ConfigError(f"{path} was trained with {saved} micro-batches per step (train.grad_accum times the processes); "
                              f"this run has {now} ({p} process(es) x grad_accum {self.config.grad_accum}): {fix}")

    # -- data ------------------------------------------------------------------------------
    def _micro_batches(self) -> Iterator[Any]:
        """Endless micro-batches from the saved position, epoch after epoch. With ``execution.workers``
        this process's batches come from DataLoader workers and the other processes' positions are
        None (:func:`~attnkit.data.workers.worker_batches`)."""
        if self.config.execution.workers:
            from attnkit.data.workers import worker_batches

            for self.epoch, self.batch_index, batch in worker_batches(
                self.task, seed=self.config.seed, epoch=self.epoch, index=self.batch_index,  # type: ignore[arg-type]
                rank=self.parallel.rank, world=self.parallel.size, workers=self.config.execution.workers,
            ):
                yield batch
            return
        while True:
            produced = False
            for i, batch in enumerate(self.task.batches(self.epoch, self.config.seed)):
                produced = True
                if i < self.batch_index:
                    continue
                self.batch_index = i + 1
                yield batch
            if not produced:
                raise CheckpointError("the training data produced no batches; is the dataset empty?")
            self.epoch, self.batch_index = self.epoch + 1, 0

    # -- the loop --------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> TrainResult:
        c = self.config
        if self.parallel.is_main:
            remove_orphans(self.out)
        self.parallel.barrier()
        if resume:
            if not self.resume():
                raise CheckpointError(f"--resume: no checkpoint under {self.out / 'checkpoints'}; start without --resume")
        else:
            torch.manual_seed(c.seed)
            self.parallel.seed(c.seed, 0)
            self._truncate_metrics(0)
        result = TrainResult(step=self.step, best=self.best, best_step=self.best_step)
        self._rewrite_csv()
        self._board = self._open_board(purge_step=self.step + 1 if resume else None)
        data = self._micro_batches()
        bar = _progress(self.progress, c.steps, self.step)
        start = time.perf_counter()
        # tokens fed to the model in the logging window (a device tensor: no host sync per step), the
        # window's start and the seconds inside it spent on evaluation and checkpoints (left out)
        window_tokens: torch.Tensor | int = 0
        window_start, window_paused = time.perf_counter(), 0.0
        pending: list[torch.Tensor] = []
        self.model.train()
        while self.step < c.steps:
            # 1-2. forward/backward over grad_accum micro-batches, clip, Adam
            lr = scheduled_lr(self.scheduler)  # this step's (layer_decay scales lower groups down)
            if hasattr(self.task, "set_step"):  # a task whose loss follows the step (scheduled sampling)
                self.task.set_step(self.step)
            # of the step's grad_accum x P micro-batches, process r takes r, r + P, ...
            micro = [next(data) for _ in range(c.grad_accum * self.parallel.size)][self.parallel.rank :: self.parallel.size]
            inputs = self._input_tokens(micro)
            loss_sum, tokens = self.graphed(micro) if self.graphed is not None else self._step_body(micro)
            self.scheduler.step()
            self.step += 1
            if self.ema is not None:
                decay = min(c.reg.ema_decay, self.step / (self.step + 1))
                torch._foreach_lerp_(self.ema, [p.detach() for p in self.params], 1.0 - decay)
            pending.append(loss_sum / tokens)  # stays on the device: no host sync per step
            window_tokens = window_tokens + (tokens if inputs is None else inputs)
            # 3. log (the only place, with evaluation, where the host waits for the device)
            if c.log_every and (self.step % c.log_every == 0 or self.step == c.steps):
                step_loss = self._flush(pending, result)
                n_tokens = int(self.parallel.sum(torch.as_tensor(window_tokens, dtype=torch.float64)))  # every process's
                elapsed = max(time.perf_counter() - window_start - window_paused, 1e-9)
                record = {"step": self.step, "epoch": self.epoch, "loss": step_loss, "lr": lr, "tokens": n_tokens,
                          "tokens_per_s": n_tokens / elapsed}
                self._log(record)
                bar.set_postfix(loss=f"{step_loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_s']:.0f}")
                window_tokens, window_start, window_paused = 0, time.perf_counter(), 0.0
                for hook in self.hooks:
                    hook(self, self.step, record)
            bar.update(1)
            # 4. evaluate, keep the best, stop early; 5. checkpoint (both timed out of tokens/s)
            last = self.step == c.steps
            evaluate = bool(c.eval.every) and (self.step % c.eval.every == 0 or last)
            save = bool(c.save_every and self.step % c.save_every == 0) or last
            if evaluate or save:
                _synchronize(self.device)  # the steps queued so far belong to the training time
                paused = time.perf_counter()
                if evaluate and self._evaluate(result):
                    result.stopped_early = True
                    last = save = True
                if save:
                    self._save_checkpoint()
                window_paused += time.perf_counter() - paused
            if result.stopped_early:
                break
        data.close()  # with execution.workers: stops the worker processes
        self._flush(pending, result)
        bar.close()
        if self._board is not None:
            self._board.close()
            self._board = None
        if not c.eval.every:
            with self._averaged_weights():
                self._save_model()
        result.step, result.best, result.best_step = self.step, self.best, self.best_step
        result.seconds = time.perf_counter() - start
        if self.parallel.is_main:
            plot_losses(self.out / "metrics.jsonl", self.out / "loss.png", label_smoothing=c.reg.label_smoothing, metric=c.eval.metric)
        return result

    def _save_checkpoint(self) -> None:
        """Process 0 writes the checkpoint (the weights gathered first under FSDP); the others wait."""
        c = self.config
        model = self.parallel.consolidated(self.model)
        state = self.state_dict()
        if model is not None:
            save_checkpoint(self.out, self.step, model, state, tokenizer=self.tokenizer, keep=c.keep_checkpoints)  # type: ignore[arg-type]
        self.parallel.barrier()

    def _save_model(self) -> None:
        """Save the model to ``out/model`` from process 0 (gathered first under FSDP); the others wait."""
        model = self.parallel.consolidated(self.model)
        if model is not None:
            model.save_pretrained(self.out / "model", tokenizer=self.tokenizer)  # type: ignore[operator]
        self.parallel.barrier()

    def _input_tokens(self, micro: list[Any]) -> torch.Tensor | int | None:
        """The tokens fed to the model by the micro-batches (``task.input_tokens``), or None where
        the task does not count them. Counted on the device: no host sync."""
        count = getattr(self.task, "input_tokens", None)
        if count is None:
            return None
        total: torch.Tensor | int = 0
        for batch in micro:
            total = total + count(batch)
        return total

    def _step_body(self, micro: list[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the micro-batches: the loss is averaged over target tokens across
        all of them (each micro-batch's mean weighted by its token count), then gradients are
        clipped and the optimizer steps. Returns the summed loss and the token count, on the device.
        Recorded as a CUDA graph with ``cuda_graphs`` (:mod:`attnkit.training.graphs`), so no host
        reads: the gradients are zeroed in place there, to stay at one address."""
        c = self.config
        self.optimizer.zero_grad(set_to_none=self.graphed is None)
        loss_sum = torch.zeros((), device=self.device)
        tokens = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro):
            if self.compiled_graphs:  # outputs of the last replay are done with
                torch.compiler.cudagraph_mark_step_begin()
            # gradients are exchanged between processes on the last micro-batch only
            with self.parallel.micro_step(self.model, last=i == len(micro) - 1):
                with self.autocast():
                    loss, n = self.task.loss(self.forward_model, batch)
                if not isinstance(n, torch.Tensor):  # a count read off the batch's shape (a recorded step holds one shape):
                    n = torch.full((), float(n), device=self.device)  # filled on the device, no host-to-device copy
                n = n.to(device=self.device, dtype=torch.float32)
                if c.execution.precision == "fp16":
                    self._scaler_for(n).scale(loss * n).backward()
                else:
                    (loss * n).backward()
            loss_sum += loss.detach().float() * n
            tokens += n
        # one all-reduce: the global batch's summed loss and token count
        loss_sum, tokens = self.parallel.sum(torch.stack([loss_sum, tokens])).to(self.device).unbind()
        tokens = tokens.clamp(min=1.0)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            # DDP and FSDP average the gradients over the P processes: divide by N_total / P
            torch._foreach_div_(grads, tokens / self.parallel.size)  # one multi-tensor kernel, not one per parameter
        if c.optim.clip_norm > 0:
            self.parallel.clip_grad_norm_(self.params, c.optim.clip_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped where a gradient overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        return loss_sum, tokens

    def _scaler_for(self, n: torch.Tensor) -> torch.amp.GradScaler:
        """The fp16 loss scaler; the first one starts at ``2^16 / n`` since the backward pass takes the
        summed loss of ``n`` tokens, not their mean (so a usual scale would overflow at once)."""
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type, init_scale=2.0**16 / max(float(n), 1.0))
        return self.scaler

    def _flush(self, pending: list[torch.Tensor], result: TrainResult) -> float:
        """Move the losses of the last steps to the host; stop on a non-finite loss. Returns the last."""
        if not pending:
            return result.losses[-1] if result.losses else float("nan")
        values = torch.stack(pending).tolist()
        pending.clear()
        first = self.step - len(values) + 1
        result.losses.extend(values)
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise DivergedError(f"training loss became {v} at step {first + i}; lower train.optim.lr")
        return values[-1]

    def _evaluate(self, result: TrainResult) -> bool:
        """Run the task's evaluation; save the best model; return True to stop early."""
        c = self.config
        self.model.eval()
        with self._averaged_weights():
            with torch.no_grad(), (self.autocast() if c.eval.precision == "train" else nullcontext()):
                metrics = self.task.evaluate(self.model)
            metrics = self.parallel.broadcast(metrics)  # every process takes process 0's decisions
            better = self._is_better(metrics)
            if better:
                self._save_model()
        self.model.train()
        self._log({"step": self.step, **{f"eval/{k}": v for k, v in metrics.items()}})
        self.write(f"step {self.step}: " + " ".join(f"{k}={_show(v)}" for k, v in metrics.items()))
        result.evals.append({"step": self.step, **metrics})
        value = metrics[c.eval.metric]
        if better:
            self.best, self.best_step, self.bad_evals = value, self.step, 0
        else:
            self.bad_evals += 1
        e = c.eval
        if e.stop_at is not None and (value <= e.stop_at if e.mode == "min" else value >= e.stop_at):
            return True
        return bool(e.patience and self.bad_evals >= e.patience)

    def _is_better(self, metrics: dict[str, float]) -> bool:
        e = self.config.eval
        if e.metric not in metrics:
            raise ConfigError(f"train.eval.metric={e.metric!r} is not reported by the task; it reports {', '.join(metrics) or 'nothing'}")
        value = metrics[e.metric]
        return self.best is None or (value < self.best if e.mode == "min" else value > self.best)

    @contextmanager
    def _averaged_weights(self) -> Iterator[None]:
        """Inside: the model holds the weight average (if any); the raw weights come back after."""
        if self.ema is None:
            yield
            return
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            torch._foreach_copy_(self.params, self.ema)
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.params, raw)

    # -- files -----------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard, if open); process 0 only."""
        if not self.parallel.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if any(k not in self._csv_keys for k in record):
            self._rewrite_csv()  # a new column: the header changes, so the file is written again
        else:
            with open(self.out / "metrics.csv", "a", newline="") as f:
                csv.writer(f).writerow([_csv_cell(record.get(k)) for k in self._csv_keys])
        if self._board is not None:
            for k, v in record.items():
                if k not in ("step", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._board.add_scalar(k, v, record["step"])

    def _rewrite_csv(self) -> None:
        """Write ``metrics.csv`` from ``metrics.jsonl``: one row per record, a column for every key seen."""
        if not self.parallel.is_main:
            return
        path = self.out / "metrics.jsonl"
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        keys: list[str] = []
        for r in records:
            keys.extend(k for k in r if k not in keys)
        self._csv_keys = keys
        if not records and not (self.out / "metrics.csv").exists():
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "metrics.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            w.writerows([_csv_cell(r.get(k)) for k in keys] for r in records)

    def _open_board(self, purge_step: int | None) -> Any:
        """A TensorBoard writer under ``out/tensorboard`` with ``config.tensorboard``; None without
        it, or (after one printed line) where the ``tensorboard`` package is missing."""
        if not self.config.tensorboard or not self.parallel.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.write("train.tensorboard: the tensorboard package is not installed (pip install 'attnkit[tensorboard]'); "
                       "no event files written")
            return None
        # purge_step: on resume, events at or after it from the replaced run are dropped
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=purge_step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop records after ``step`` (they belong to a run that is being replayed), in both files."""
        if not self.parallel.is_main:
            return
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        keep = [line for line, record in json_lines(path.read_text()) if record.get("step", 0) <= step]  # a line cut by a kill: dropped
        path.write_text("".join(line + "\n" for line in keep))
        self._rewrite_csv()


def _check_rdrop(task: Task, rdrop: float) -> None:
    """``train.reg.rdrop`` must be the task's own R-Drop weight; a task without one takes only 0."""
    own = getattr(task, "rdrop", None)
    if own is None and rdrop > 0:
        raise ConfigError(f"reg.rdrop={rdrop!r} is not supported by {type(task).__name__}; R-Drop applies to "
                          "`attnkit finetune classify` and `ner` only: leave train.reg.rdrop at 0")
    if own is not None and own != rdrop:
        raise ConfigError(f"reg.rdrop={rdrop!r} differs from the {type(task).__name__}'s rdrop={own!r}; "
                          "build the task with rdrop=config.reg.rdrop")


def _synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA runs asynchronously; the CPU does not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _show(value: Any) -> str:
    """A metric as printed: numbers to four significant digits, anything else as it is."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _csv_cell(value: Any) -> Any:
    """A record's value as a CSV cell: numbers and strings as they are, a missing key empty, others as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, (int, float, str)) else json.dumps(value)


def _writer(progress: bool) -> Callable[[str], None]:
    """``tqdm.write`` under a progress bar (it keeps the bar whole), else ``print``."""
    if not progress:
        return print
    from tqdm.auto import tqdm

    return tqdm.write


def _progress(enabled: bool, total: int, initial: int) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


class _NoBar:
    def update(self, n: int) -> None: ...

    def set_postfix(self, **kw: Any) -> None: ...

    def close(self) -> None: ...


def plot_losses(metrics: Path, png: Path, *, label_smoothing: float = 0.0, metric: str = "loss") -> Path | None:
    """Plot what ``metrics.jsonl`` holds against the step: the training loss (labelled with its
    label smoothing, if any) and the validation loss; the learning rate below; the validation
    ``metric`` in a third panel where it is logged and is not the loss. ``None`` without matplotlib
    or records.

    Args:
        metrics: the ``metrics.jsonl`` a :class:`Trainer` wrote.
        png: where the figure goes.
        label_smoothing: the run's ``reg.label_smoothing``; the training loss includes it.
        metric: the run's ``eval.metric``, plotted from its ``eval/METRIC`` records.

    Returns:
        ``png``, or None where nothing was plotted.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not metrics.exists():
        return None
    recs = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    train = [(r["step"], r["loss"]) for r in recs if "loss" in r]
    evals = [(r["step"], r["eval/loss"]) for r in recs if "eval/loss" in r]
    lrs = [(r["step"], r["lr"]) for r in recs if "lr" in r]
    scores = [(r["step"], r[f"eval/{metric}"]) for r in recs if metric != "loss" and isinstance(r.get(f"eval/{metric}"), (int, float))]
    if not train:
        return None
    panels = 2 + bool(scores)
    fig, axes = plt.subplots(panels, 1, figsize=(6, 2.2 + 1.8 * panels), sharex=True, height_ratios=[2] + [1] * (panels - 1))
    ax = axes[0]
    ax.plot(*zip(*train), label=f"train (label-smoothed, eps={label_smoothing:g})" if label_smoothing > 0 else "train")
    if evals:
        ax.plot(*zip(*evals), marker="o", label="validation (no smoothing)" if label_smoothing > 0 else "validation")
    ax.set_ylabel("cross-entropy per token")
    ax.set_yscale("log")
    ax.legend()
    if lrs:
        axes[1].plot(*zip(*lrs), color="tab:green")
    axes[1].set_ylabel("learning rate")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if scores:
        axes[2].plot(*zip(*scores), marker="o", color="tab:red")
        axes[2].set_ylabel(f"validation {metric}")
    for a in axes:
        a.grid(alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
