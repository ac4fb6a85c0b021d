"""The one run path: a task's :class:`Job`, its configs, and :func:`run`.

    from attnkit import recipes, runs
    job = runs.job("translate")
    cfgs = runs.resolve_configs(job, recipe=recipes.get("multi30k-de-en"), root="data", assignments=["train.steps=100"])
    report = runs.run(job, cfgs, "runs/multi30k")
    report.final["test_bleu"], report.model_dir

Every training command of the CLI is argument parsing, a recipe and these calls.
"""

from __future__ import annotations

from typing import Callable

from attnkit.errors import ConfigError
from attnkit.runs.base import Job, Prepared, RunReport
from attnkit.runs.path import RUN_CONFIG, SAFE_ON_RESUME, check_out, read_run_config, resolve_configs, run


def _jobs() -> dict[str, Callable[[], Job]]:
    from attnkit.runs.lm import LMJob
    from attnkit.runs.seq2seq import SyntheticJob, TranslateJob

    table: dict[str, Callable[[], Job]] = {
        "reverse": lambda: SyntheticJob("reverse"),
        "sort": lambda: SyntheticJob("sort"),
        "copy": lambda: SyntheticJob("copy"),
        "translate": TranslateJob,
        "lm": LMJob,
    }
    for module, names in (("attnkit.runs.mlm", ("mlm",)), ("attnkit.runs.listops", ("listops",)),
                          ("attnkit.runs.finetune", ("classify", "ner")), ("attnkit.runs.qa", ("qa",))):
        import importlib.util

        if importlib.util.find_spec(module) is None:
            continue
        mod = importlib.import_module(module)
        for n in names:
            table[n] = getattr(mod, "JOBS")[n]
    return table


def job(task: str) -> Job:
    """The job that trains ``task`` (``reverse``, ``sort``, ``copy``, ``translate``, ``lm``, ``mlm``, ``listops``, ``classify``, ``ner``, ``qa``)."""
    table = _jobs()
    if task not in table:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(table)}")
    return table[task]()


import importlib  # noqa: E402

__all__ = ["Job", "Prepared", "RUN_CONFIG", "RunReport", "SAFE_ON_RESUME", "check_out", "job", "read_run_config", "resolve_configs", "run"]
