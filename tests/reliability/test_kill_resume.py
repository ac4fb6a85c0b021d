"""kill -9 at random moments, most of them inside checkpoint writes, then --resume: every checkpoint loads and
the final weights equal those of a run that was never interrupted (bit for bit, on the CPU)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import attnkit
from attnkit.training.checkpoint import list_checkpoints, load_trainer_state
from tests.reliability.harness import REPO

# a checkpoint every step: most of the run's time is spent writing them
ARGS = ["--no-progress", "--set", "data.n_train=256", "--set", "data.n_valid=8", "--set", "model.d_model=32", "--set", "model.n_heads=2",
        "--set", "model.d_ff=64", "--set", "model.n_encoder_layers=1", "--set", "model.n_decoder_layers=1", "--set", "train.steps=40",
        "--set", "train.save_every=1", "--set", "train.keep_checkpoints=3", "--set", "train.eval.every=0", "--set", "train.batch_size=16",
        "--set", "train.schedule.warmup=4", "--set", "train.device=cpu", "--set", "train.log_every=5"]


def start(out: Path, resume: bool) -> subprocess.Popen:
    argv = ["train", "reverse", "--out", str(out), "--resume"] if resume else ["train", "reverse", "--out", str(out), *ARGS]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "attnkit.cli.main", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return attnkit.load(model_dir).state_dict()


@pytest.mark.slow
def test_kill_during_checkpoints_then_resume_equals_an_uninterrupted_run(tmp_path):
    straight = tmp_path / "straight"
    proc = start(straight, resume=False)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]

    out = tmp_path / "killed"
    rng = random.Random(0)
    latest = out / "checkpoints" / "latest"
    proc = start(out, resume=False)
    for kill in range(5):
        before = latest.read_text() if latest.is_file() else ""
        deadline = time.monotonic() + 120
        while (not latest.is_file() or latest.read_text() == before) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # the run has written one more checkpoint: it is writing the next
        if proc.poll() is not None:
            break
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for ckpt in list_checkpoints(out):  # whatever the kill interrupted, every checkpoint that is named is whole
            attnkit.load(ckpt)
            load_trainer_state(ckpt)
        proc = start(out, resume=True)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-2000:]
    assert kill == 4, "the run ended before it could be killed five times"
    a, b = weights(straight / "model"), weights(out / "model")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
