"""A training command under torchrun, as a user starts it: two processes against one with the global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SETTINGS = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.context=16", "model.dropout=0", "model.attention.dropout=0", "train.batch_size=4",
            "train.device=cpu", "train.steps=4", "train.save_every=2", "train.eval.every=4", "data.sample_tokens=0",
            "train.schedule.warmup=1", "train.optim.eps=1e-4"]


def _train(tmp_path, out, *launcher, extra=()):
    text = tmp_path / "text.txt"
    if not text.exists():
        text.write_text("the quick brown fox jumps over the lazy dog. " * 60)
    sets = [a for s in [*SETTINGS, *extra] for a in ("--set", s)]
    cmd = [sys.executable, *launcher, "-m", "attnkit.cli.main", "train", "lm", "--text", str(text), "--out", str(out), "--no-progress", *sets]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, json.loads((out / "eval.json").read_text())


@pytest.mark.slow
def test_train_lm_under_torchrun_equals_one_process(tmp_path):
    stdout, two = _train(tmp_path, tmp_path / "two", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    assert stdout.count("trained 4 steps") == 1  # process 0 prints for the run
    # the reference in this process (one torch thread, as the conftest sets): the same command, no second interpreter to start
    from attnkit.cli.main import main

    sets = [a for s in [*SETTINGS, "train.grad_accum=2"] for a in ("--set", s)]
    assert main(["train", "lm", "--text", str(tmp_path / "text.txt"), "--out", str(tmp_path / "one"), "--no-progress", *sets]) == 0
    one = json.loads((tmp_path / "one" / "eval.json").read_text())
    assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["latest", "step-00000002", "step-00000004"]
