"""Two gloo processes against one process with the global batch: DDP, gradient accumulation, FSDP2,
unequal token counts per process, one all-reduce per optimizer step, and a two-process checkpoint
resumed on one process."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _dist_scenarios import STEPS, config, train, worker

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """Every two-process scenario, run once in one spawn of two gloo processes."""
    root = tmp_path_factory.mktemp("dist")
    mp.spawn(worker, args=(2, str(root), _free_port()), nprocs=2, join=True)
    return root, torch.load(root / "results.pt", weights_only=True)


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], start: dict[str, torch.Tensor] | None = None) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert torch.allclose(got[k], want[k], rtol=0, atol=1e-6), (k, (got[k] - want[k]).abs().max().item())
    if start is not None:  # the comparison means something only if training moved the weights
        assert any((want[k] - start[k]).abs().max() > 1e-3 for k in want)


def _start() -> dict[str, torch.Tensor]:
    from _dist_scenarios import tiny_gpt

    return {k: v.clone() for k, v in tiny_gpt().state_dict().items()}


def test_ddp_equals_one_process_with_the_global_batch(two_processes, tmp_path):
    """Each micro-batch has its own token count, so the loss must be normalised by the global count."""
    _, results = two_processes
    _assert_close(results["ddp"], train(tmp_path, config(grad_accum=2, parallel="none")), _start())


def test_ddp_with_accumulation_equals_one_process(two_processes, tmp_path):
    _, results = two_processes
    _assert_close(results["ddp_accum"], train(tmp_path, config(grad_accum=4, parallel="none")), _start())


def test_fsdp_with_accumulation_equals_one_process(two_processes, tmp_path):
    _, results = two_processes
    _assert_close(results["fsdp_accum"], train(tmp_path, config(grad_accum=4, parallel="none")), _start())


@pytest.mark.parametrize("run,tie", [("ddp_chunked_untied", False), ("fsdp_chunked", True)])
def test_chunked_loss_on_two_processes_equals_the_plain_loss_on_one(two_processes, tmp_path, run, tie):
    _, results = two_processes
    _assert_close(results[run], train(tmp_path, config(grad_accum=4, parallel="none"), tie=tie))


def test_one_all_reduce_per_optimizer_step(two_processes):
    """2 micro-batches a step: the first runs under no_sync, so the hook sees one bucket a step (not two)."""
    _, results = two_processes
    assert results["all_reduces"] == [1] * STEPS  # the tiny model fits DDP's first (1 MB) bucket


def _halfway(root: Path, run: str, tmp_path: Path) -> Path:
    """A copy of ``run``'s output as it was at its step-``STEPS // 2`` checkpoint."""
    name = f"step-{STEPS // 2:08d}"
    out = tmp_path / "half"
    shutil.copytree(root / run / "checkpoints" / name, out / "checkpoints" / name)
    (out / "checkpoints" / "latest").write_text(name + "\n")
    return out


@pytest.mark.parametrize(("run", "grad_accum"), [("ddp", 1), ("fsdp_accum", 2)])
def test_two_process_checkpoint_resumes_on_one(two_processes, tmp_path, run, grad_accum):
    """A checkpoint of two processes (written by process 0; gathered from the shards under FSDP),
    resumed on one with twice the grad_accum (the same global batch and data position), ends
    where the whole run on one process does."""
    root, _ = two_processes
    resumed = train(_halfway(root, run, tmp_path), config(grad_accum=2 * grad_accum, parallel="none"), resume=True)
    _assert_close(resumed, train(tmp_path / "whole", config(grad_accum=2 * grad_accum, parallel="none")), _start())


def test_resume_refuses_another_global_batch(two_processes, tmp_path):
    from attnkit.errors import ConfigError

    root, _ = two_processes
    with pytest.raises(ConfigError, match="2 micro-batches per step.*train.grad_accum=2"):
        train(_halfway(root, "ddp", tmp_path), config(grad_accum=1, parallel="none"), resume=True)
