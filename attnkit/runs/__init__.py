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
    from attnkit.runs import denoising, electra, fewshot, finetune, listops, mlm, mlm_qa, qa, unilm, xlnet
    from attnkit.runs.dialogue import JOBS as DIALOGUE_JOBS
    from attnkit.runs.lm import LMJob
    from attnkit.runs.seq2seq import SyntheticJob, TranslateJob

    return {
        "reverse": lambda: SyntheticJob("reverse"),
        "sort": lambda: SyntheticJob("sort"),
        "copy": lambda: SyntheticJob("copy"),
        "translate": TranslateJob,
        "lm": LMJob,
        **mlm.JOBS,
        **listops.JOBS,
        **finetune.JOBS,
        **qa.JOBS,
        **denoising.JOBS,
        **electra.JOBS,
        **unilm.JOBS,
        **xlnet.JOBS,
        **DIALOGUE_JOBS,
        **fewshot.JOBS,
        **mlm_qa.JOBS,
    }


def job(task: str) -> Job:
    """The job that trains ``task`` (``reverse``, ``sort``, ``copy``, ``translate``, ``lm``, ``mlm``, ``listops``, ``classify``, ``ner``, ``qa``)."""
    table = _jobs()
    if task not in table:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(table)}")
    return table[task]()



__all__ = ["Job", "Prepared", "RUN_CONFIG", "RunReport", "SAFE_ON_RESUME", "check_out", "job", "read_run_config", "resolve_configs", "run"]
