"""kill -9 at random moments, most of them inside checkpoint writes, then --resume: every checkpoint loads and
the final weights equal those of a run that was never interrupted (bit for bit, on the CPU)."""

from __future__ import annotations

import multiprocessing
import random
import time
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest
import torch

import attnkit
from attnkit.training.checkpoint import list_checkpoints, load_trainer_state

# a checkpoint every step: most of the run's time is spent writing them
ARGS = ["--no-progress", "--set", "data.n_train=256", "--set", "data.n_valid=8", "--set", "model.d_model=32", "--set", "model.n_heads=2",
        "--set", "model.d_ff=64", "--set", "model.n_encoder_layers=1", "--set", "model.n_decoder_layers=1", "--set", "train.steps=40",
        "--set", "train.save_every=1", "--set", "train.keep_checkpoints=3", "--set", "train.eval.every=0", "--set", "train.batch_size=16",
        "--set", "train.schedule.warmup=4", "--set", "train.device=cpu", "--set", "train.log_every=5"]


# A run of the command in a process of its own, forked from multiprocessing's fork server (a fresh interpreter that
# has imported torch and torch._dynamo, and no attnkit module): each start skips the torch import, and a kill is still
# SIGKILL to a process in the middle of its run. Its output goes to ``<out>.log`` beside the run.
RUN = """
import os, sys
log = os.open({log!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
os.dup2(log, 1)
os.dup2(log, 2)
import torch
torch.set_num_threads(1)
from attnkit.cli.main import main
sys.exit(main({argv!r}))
"""


def start(out: Path, resume: bool) -> BaseProcess:
    argv = ["train", "reverse", "--out", str(out), "--resume"] if resume else ["train", "reverse", "--out", str(out), *ARGS]
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "torch._dynamo"])
    proc = ctx.Process(target=exec, args=(RUN.format(log=str(out.parent / f"{out.name}.log"), argv=argv), {}))
    proc.start()
    return proc


def finish(proc: BaseProcess, out: Path) -> None:
    proc.join(timeout=300)
    assert proc.exitcode == 0, (out.parent / f"{out.name}.log").read_text()[-2000:]


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return attnkit.load(model_dir).state_dict()


@pytest.mark.slow
def test_kill_during_checkpoints_then_resume_equals_an_uninterrupted_run(tmp_path):
    # the uninterrupted run in this process (one torch thread, as the conftest sets): no interpreter to start
    from attnkit.cli.main import main

    straight = tmp_path / "straight"
    assert main(["train", "reverse", "--out", str(straight), *ARGS]) == 0

    out = tmp_path / "killed"
    rng = random.Random(0)
    latest = out / "checkpoints" / "latest"
    proc = start(out, resume=False)
    for kill in range(5):
        before = latest.read_text() if latest.is_file() else ""
        deadline = time.monotonic() + 120
        while (not latest.is_file() or latest.read_text() == before) and proc.exitcode is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the run has written one more checkpoint: it is writing the next
        if proc.exitcode is not None:
            break
        time.sleep(rng.uniform(0.0, 0.15))
        proc.kill()  # SIGKILL
        proc.join()
        for ckpt in list_checkpoints(out):  # whatever the kill interrupted, every checkpoint that is named is whole
            attnkit.load(ckpt)
            load_trainer_state(ckpt)
        proc = start(out, resume=True)
    finish(proc, out)
    assert kill == 4, "the run ended before it could be killed five times"
    a, b = weights(straight / "model"), weights(out / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
