"""The options every training command shares, and the call into the one run path.

A training command is argument parsing plus a recipe plus :func:`attnkit.runs.run`: its own
flags (``--text FILE``, ``--epochs 3``) become ``--set`` assignments of its data config, so
they follow the same rules as ``--set`` (applied together, checked once, and on ``--resume``
refused where they would change what the run learns).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from attnkit.config import Config
from attnkit.errors import ConfigError


def add_run_arguments(p: argparse.ArgumentParser, task: str, *, out: str) -> None:
    """Add --recipe, --quick, --data-root, --out, --resume, --set, --config, --show-config and --no-progress."""
    g = p.add_argument_group("run")
    g.add_argument("--recipe", metavar="NAME", help=f"start from a named recipe (attnkit recipes lists those of {task})")
    g.add_argument("--quick", action="store_true", help="the recipe's quick variant: tiny sizes, a few steps, seconds on a CPU")
    g.add_argument("--data-root", type=Path, metavar="DIR",
                   help="where a recipe's data paths are found (default: $ATTNKIT_DATA, else ./data)")
    g.add_argument("--out", type=Path, default=Path(out), help=f"output directory of the run (default: {out}); a new run needs one "
                   "that holds no other run")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint, with its saved settings")
    g.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a setting, e.g. --set train.optim.lr=3e-4 (repeatable; values parsed as JSON; applied together, so "
                   "the order of different keys does not matter; a key given twice takes its last value)")
    g.add_argument("--config", type=Path, metavar="FILE",
                   help='a JSON file of settings by config, e.g. {"train": {"optim": {"lr": 3e-4}}}, applied with --set')
    g.add_argument("--show-config", action="store_true", help="print every setting (after --recipe, flags and --set) with its "
                   "allowed values, and exit")
    g.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")


def config_file_assignments(path: Path | None, names: list[str]) -> list[str]:
    """The ``key=value`` assignments of a ``--config`` JSON file."""
    if path is None:
        return []
    from attnkit.io import read_json_object

    data = read_json_object(path, ConfigError, "--config")
    if not set(data) <= set(names):
        raise ConfigError(f"--config {path} must be a JSON object whose keys are among {', '.join(names)}")
    from attnkit.runs.path import flatten

    return [f"{k}={json.dumps(v)}" for k, v in flatten(data).items()]


def describe(configs: dict[str, Config]) -> str:
    """Every setting as ``key = value  (allowed values)``, one a line, for ``--show-config``."""
    lines: list[str] = []
    for name, cfg in configs.items():
        lines.extend(_describe(cfg, f"{name}."))
    return "\n".join(lines)


def _describe(cfg: Config, prefix: str) -> list[str]:
    out: list[str] = []
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value, tp = getattr(cfg, f.name), hints[f.name]
        if isinstance(value, Config):
            out.extend(_describe(value, f"{prefix}{f.name}."))
            continue
        shown = json.dumps(list(value) if isinstance(value, tuple) else value)
        out.append(f"{prefix}{f.name} = {shown}" + (f"  ({_allowed(tp)})" if _allowed(tp) else ""))
    return out


def _allowed(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(str(a) for a in get_args(tp))
    args = [a for a in get_args(tp) if a is not type(None)]
    if args and len(args) < len(get_args(tp)):
        return f"{_allowed(args[0]) or getattr(args[0], '__name__', args[0])} or null"
    return ""


def run_command(args: argparse.Namespace, job: Any, flags: list[str], *, base: dict[str, Config] | None = None) -> Any:
    """Resolve the configs of ``job`` from the recipe, ``flags`` and ``--set``/``--config``, then run it (or show them).

    Returns:
        The :class:`~attnkit.runs.RunReport`, or None with ``--show-config``.
    """
    from attnkit import recipes
    from attnkit.cli.common import progress_writer
    from attnkit.runs.path import resolve_configs, run, run_stages
    from attnkit.training.loop import pick_device

    recipe = recipes.get(args.recipe, job.task) if args.recipe else None
    if args.resume and (args.quick or base):
        raise ConfigError("--resume takes the settings of the run in --out; leave out --quick, --preset and --config there")
    log = progress_writer(args.no_progress or args.show_config)
    assignments = [*flags, *config_file_assignments(args.config, list(job.config_types)), *args.set]
    kw = dict(recipe=recipe, assignments=assignments, out=args.out, resume=args.resume, quick=args.quick, root=args.data_root,
              base=base, log=log)
    cfgs = resolve_configs(job, **kw)
    if recipe is not None and recipe.on_cuda and not args.resume and pick_device(cfgs["train"].device).type == "cuda":
        cfgs = resolve_configs(job, cuda=True, **kw)
    if args.show_config:
        print(describe(cfgs))
        return None
    if args.resume:
        check_resumable(args.out, cfgs["train"].steps)  # type: ignore[attr-defined]
    else:
        check_not_a_model(args.out)
    if recipe is not None and recipe.before and not args.resume:
        fed = run_stages(recipe, args.out, quick=args.quick, root=args.data_root, progress=not args.no_progress, log=log,
                         assignments=assignments)
        cfgs = resolve_configs(job, **{**kw, "assignments": [*fed, *assignments]})
    return run(job, cfgs, args.out, resume=args.resume, progress=not args.no_progress,
               recipe=recipe.name if recipe is not None else None, log=log)


def check_resumable(out: Path, steps: int) -> None:
    """Before any file of the run changes: its newest checkpoint's state can be read, and ``steps`` does not end before it.

    Args:
        out: the run directory.
        steps: ``train.steps`` of the resumed run.

    Raises:
        CheckpointError: the trainer state is unreadable.
        ConfigError: the run has already passed ``steps``.
    """
    from attnkit.training.checkpoint import latest_checkpoint, load_trainer_state

    latest = latest_checkpoint(out)
    if latest is None:
        return  # stopped before its first checkpoint: the run path starts it again from step 0
    step = int(load_trainer_state(latest).get("step", 0))
    if steps < step:
        raise ConfigError(f"train.steps={steps} ends before step {step}, where the run in {out} already is; "
                          f"give train.steps above {step} to train on")


def check_not_a_model(out: Path) -> None:
    """A new run's ``--out`` is not a saved model or a run's checkpoints directory (the run would write its files among theirs).

    Raises:
        ConfigError: ``out`` holds ``config.json`` or ``model.safetensors``, or a checkpoint pointer ``latest``.
    """
    if (out / "config.json").is_file() or (out / "model.safetensors").is_file():
        raise ConfigError(f"--out {out} holds a saved model; a run writes its own model to OUT/model; choose another --out")
    if (out / "latest").is_file():
        raise ConfigError(f"--out {out} is a run's checkpoints directory; choose another --out")
