"""The one run path: from configs to a trained, saved and scored model.

Every training command is argument parsing, a recipe, and these two functions:

* :func:`resolve_configs` builds a run's configs: the recipe's (or the task's defaults), with
  ``--set`` assignments applied together and validated once; on resume, the run's own saved
  ``run_config.json``, where a repeated setting is taken with a printed note if it is safe to
  change mid-run (more steps, evaluation cadence) and refused, naming the key, otherwise.
* :func:`run` owns the output directory: it refuses to start a new run where another one
  lives, writes ``run_config.json`` atomically, drives the :class:`~attnkit.training.loop.Trainer`
  (checkpoints, exact resume), saves the model with its tokenizer, lets the job score it,
  writes ``eval.json`` and prints the report. Under ``torchrun`` every process runs it: they join
  one process group first (:func:`~attnkit.training.distributed.init_distributed`), process 0
  checks and writes the run's files and prints, and the Trainer splits each step between them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from attnkit.config import Config, apply_overrides
from attnkit.errors import CheckpointError, ConfigError
from attnkit.io import atomic_write_text, read_json_object
from attnkit.runs.base import Job, Log, RunReport
from attnkit.training.checkpoint import list_checkpoints
from attnkit.training.distributed import init_distributed, world
from attnkit.training.loop import Trainer, pick_device
from attnkit.training.moe import wrap_switch

RUN_CONFIG = "run_config.json"
# settings a resumed run may change: how long it trains and how often it reports, not what it learns
SAFE_ON_RESUME = (
    "train.steps", "train.log_every", "train.save_every", "train.keep_checkpoints", "train.eval.every",
    "train.eval.patience", "train.eval.stop_at", "train.tensorboard",
    # where and how the steps run: a run may resume on another number of processes (the Trainer
    # checks that grad_accum times the processes, the global batch, stays the same)
    "train.execution.parallel", "train.execution.checkpointing", "train.grad_accum",
    "train.execution.workers",  # the batches are those built in process (attnkit.data.workers)
)
# sections whose defaults switch a feature off: a run saved without one trained without it, so it resumes at the defaults
OPTIONAL_ON_RESUME = ("peft",)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as dotted keys (``train.optim.lr``); dict-valued fields such as ``params`` stay whole."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and k != "params":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def data_root(path: str | os.PathLike | None) -> Path:
    """Where a recipe's relative data paths live: ``path``, else ``$ATTNKIT_DATA``, else ``./data``."""
    return Path(path if path is not None else os.environ.get("ATTNKIT_DATA", "data")).absolute()


def read_run_config(out: Path) -> dict[str, Any]:
    """The parsed ``OUT/run_config.json`` of an earlier run."""
    path = Path(out) / RUN_CONFIG
    if not path.is_file():
        raise CheckpointError(f"--resume: {path} does not exist; nothing to resume in {out}")
    return read_json_object(path, CheckpointError, "the run's settings")


def resolve_configs(
    job: Job,
    *,
    recipe: Any = None,
    assignments: list[str] | tuple[str, ...] = (),
    out: str | os.PathLike | None = None,
    resume: bool = False,
    quick: bool = False,
    cuda: bool = False,
    root: str | os.PathLike | None = None,
    base: dict[str, Config] | None = None,
    log: Log = print,
) -> dict[str, Config]:
    """The configs of a run.

    Args:
        job: the task.
        recipe: a :class:`~attnkit.recipes.Recipe` of ``job``'s task, or None for the task's defaults.
        assignments: ``key=value`` overrides (``--set``, and command-line flags turned into assignments).
        out: the output directory (read on resume).
        resume: take the saved configs of ``out``; ``assignments`` may change only :data:`SAFE_ON_RESUME`
            keys (and the job's own ``safe_on_resume``); a changed key outside them is refused.
        quick: apply the recipe's quick CPU variant.
        cuda: the run will train on a CUDA device (applies the recipe's ``on_cuda`` assignments).
        root: the data root for the recipe's relative file paths (see :func:`data_root`).
        base: start from these configs instead of the recipe's or the defaults (a ``--preset`` or ``--config``).

    Returns:
        The configs by name, validated.
    """
    if resume:
        return _resumed_configs(job, Path(out) if out is not None else Path("."), recipe, list(assignments), log)
    cfgs: dict[str, Any] = dict(job.defaults())
    pre: list[str] = []
    if recipe is not None:
        cfgs.update(recipe.configs())
        if quick:
            pre += list(recipe.quick)
        if cuda:
            pre += list(recipe.on_cuda)
        given = {a.split("=", 1)[0].strip() for a in assignments}
        for key in recipe.files:
            if key in given:
                continue
            value = flatten({k: v.to_dict() for k, v in cfgs.items()}).get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                pre.append(f"{key}={json.dumps(str(data_root(root) / value))}")
            elif isinstance(value, list) and value and all(isinstance(v, str) for v in value):  # several files (data.text)
                pre.append(f"{key}={json.dumps([v if Path(v).is_absolute() else str(data_root(root) / v) for v in value])}")
    elif quick:
        raise ConfigError("--quick needs --recipe NAME (the quick variant of a recipe)")
    if base:
        cfgs.update(base)
    return apply_overrides([*pre, *assignments], cfgs)


def _resumed_configs(job: Job, out: Path, recipe: Any, assignments: list[str], log: Log) -> dict[str, Config]:
    saved = read_run_config(out)
    if saved.get("task") not in (None, job.task):
        raise ConfigError(f"{out} holds a {saved.get('task')!r} run; resume it with that command (attnkit ... {saved.get('task')} --resume)")
    if recipe is not None and saved.get("recipe") not in (None, recipe.name):
        raise ConfigError(f"{out} holds a run of recipe {saved.get('recipe')!r}, not {recipe.name!r}; leave out --recipe to resume it")
    cfgs: dict[str, Config] = {}
    for name, cls in job.config_types.items():
        if name not in saved:
            if name in OPTIONAL_ON_RESUME or name in getattr(job, "optional_on_resume", ()):
                cfgs[name] = job.defaults()[name]
                continue
            raise CheckpointError(f"{out / RUN_CONFIG} has no {name!r} config; it was not written by this version of attnkit")
        try:
            cfgs[name] = cls.from_dict(saved[name], prefix=f"{name}.")
        except ConfigError as e:
            raise CheckpointError(f"{out / RUN_CONFIG} cannot be resumed from: {e}") from None
    if not assignments:
        return cfgs
    new = apply_overrides(assignments, cfgs)
    before = flatten({k: v.to_dict() for k, v in cfgs.items()})
    after = flatten({k: v.to_dict() for k, v in new.items()})
    safe = set(SAFE_ON_RESUME) | set(getattr(job, "safe_on_resume", ()))
    for key in after:
        if after[key] == before.get(key):
            continue
        if key not in safe:
            raise ConfigError(f"{key}={after[key]!r}: the run in {out} was trained with {key}={before.get(key)!r}, which a resumed run "
                              f"keeps; start a new run (another --out) to change it")
        log(f"resume: {key} {before.get(key)!r} -> {after[key]!r}")
    return new


def check_out(out: Path, resume: bool) -> None:
    """A new run needs an output directory that holds no other run; a resumed one needs its run."""
    if resume:
        if not (out / RUN_CONFIG).is_file():
            raise CheckpointError(f"--resume: {out / RUN_CONFIG} does not exist; nothing to resume in {out}")
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a directory")
    held = [p for p in (out / RUN_CONFIG, out / "model", out / "checkpoints") if p.exists()]
    if held or list_checkpoints(out):
        raise CheckpointError(f"{out} holds another run ({held[0].name if held else 'checkpoints'}); continue it with --resume, "
                              "or choose another --out")


def run(
    job: Job,
    configs: dict[str, Config],
    out: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    recipe: str | None = None,
    log: Log = print,
) -> RunReport:
    """Train ``job`` with ``configs`` into ``out``: the one path every training command takes.

    Files under ``out``: ``run_config.json`` (the task, the recipe and every config), the
    Trainer's ``metrics.jsonl``/``metrics.csv``/``loss.png`` and ``checkpoints/``, ``model/``
    (the best or final model with its tokenizer, loadable with :func:`attnkit.load`), the job's
    own files, and ``eval.json`` (steps, seconds and the final scores).

    Args:
        job: the task.
        configs: from :func:`resolve_configs`.
        out: the output directory; a new run refuses one that holds another run.
        resume: continue the run in ``out`` from its newest checkpoint.
        progress: show a progress bar.
        recipe: the recipe's name, recorded in ``run_config.json``.
        log: where progress lines go.

    Returns:
        The Trainer's result, the final scores and the output directory.
    """
    out = Path(out)
    rank, size = init_distributed(configs["train"].device)  # type: ignore[attr-defined]
    if rank > 0:
        log, progress = _quiet, False
    _on_main(lambda: check_out(out, resume), size)
    job.check(configs)
    job.check_metric(configs)
    pick_device(configs["train"].device, what="train.device")  # type: ignore[attr-defined]
    saved_recipe = read_run_config(out).get("recipe") if resume else recipe
    prepared = job.prepare(configs, out, resume=resume, log=log)
    prepared.task = wrap_switch(prepared.model, prepared.task)  # Switch (mixture-of-experts) layers add their router losses
    configs = prepared.configs
    record = {"task": job.task, "recipe": saved_recipe, **{k: v.to_dict() for k, v in configs.items()}}
    if rank == 0:
        atomic_write_text(out / RUN_CONFIG, json.dumps(record, indent=2) + "\n")
    trainer = Trainer(prepared.model, prepared.task, configs["train"], out, tokenizer=prepared.tokenizer, progress=progress)  # type: ignore[arg-type]
    if resume and not list_checkpoints(out):  # stopped before its first checkpoint: nothing to restore yet
        log(f"resume: {out} holds no checkpoint yet; the run starts again from step 0 with its saved settings")
        resume = False
    if prepared.before_fit is not None and not resume:
        prepared.before_fit(trainer)
    result = trainer.fit(resume=resume)
    if rank > 0 and trainer.parallel.mode != "fsdp":  # the final scores are process 0's (FSDP's sharded model needs every process)
        return RunReport(result=result, final={}, out=out, configs=configs, state=prepared.state)
    final = job.finish(prepared, trainer, result, out, log)
    if rank > 0:
        return RunReport(result=result, final=final, out=out, configs=configs, state=prepared.state)
    summary = {"task": job.task, "recipe": saved_recipe, "steps": result.step, "seconds": round(result.seconds, 3), **final}
    atomic_write_text(out / "eval.json", json.dumps(summary, indent=2) + "\n")
    scores = ", ".join(f"{k}={_fmt(v)}" for k, v in final.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    log(f"trained {result.step} steps in {result.seconds:.1f}s" + (f"; {scores}" if scores else ""))
    log(f"model saved to {out / 'model'}")
    return RunReport(result=result, final=final, out=out, configs=configs, state=prepared.state)


def _quiet(line: str) -> None:
    """The log of processes other than 0: process 0 prints for the run."""


def _on_main(check: Any, size: int) -> None:
    """Run ``check`` on process 0 only, and raise its error on every process (none would start alone)."""
    if size == 1:
        check()
        return
    import torch.distributed as dist

    error: list[Any] = [None]
    if world()[0] == 0:
        try:
            check()
        except (ConfigError, CheckpointError) as e:
            error[0] = e
    dist.broadcast_object_list(error, src=0)
    if error[0] is not None:
        raise error[0]


def _fmt(v: float) -> str:
    return str(v) if isinstance(v, int) else f"{v:.4f}"


# where the run happens, not what it learns: a recipe's stages follow the run's own choice
STAGE_PASSTHROUGH = ("train.device",)


def run_stages(recipe: Any, out: str | os.PathLike, *, quick: bool = False, root: str | os.PathLike | None = None,
               progress: bool = True, log: Log = print, assignments: list[str] | tuple[str, ...] = (),
               stage_assignments: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Run the recipes ``recipe.before`` names, each in ``OUT/stages/NAME``; return the assignments that feed their models on.

    A stage whose directory already holds a finished model (``eval.json`` written) is not run again,
    so a resumed or repeated run reuses it. Of ``assignments`` (the later run's), those of
    :data:`STAGE_PASSTHROUGH` keys apply to the stages too (the device); ``stage_assignments`` apply to
    the stages only (e.g. ``train.steps=4000`` for a longer task-adaptive stage).
    """
    passed = [*(a for a in assignments if a.split("=", 1)[0].strip() in STAGE_PASSTHROUGH), *stage_assignments]
    from attnkit import recipes
    from attnkit.runs import job as job_of

    feeds: list[str] = []
    for stage in recipe.before:
        sub = recipes.get(stage.recipe)
        where = Path(out) / "stages" / sub.name
        if not (where / "eval.json").is_file():
            log(f"stage {sub.name} ({sub.task}) -> {where}")
            j = job_of(sub.task)
            cfgs = resolve_configs(j, recipe=sub, quick=quick, root=root, assignments=passed, log=log)
            resumable = (where / RUN_CONFIG).is_file() and bool(list_checkpoints(where))
            run(j, cfgs, where, resume=resumable, progress=progress, recipe=sub.name, log=log)
        feeds.append(f"{stage.feeds}={json.dumps(str(where / 'model'))}")
    return feeds
