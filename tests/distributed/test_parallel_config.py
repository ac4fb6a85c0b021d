"""The settings of several processes: what is refused, and what auto picks."""

from __future__ import annotations

import pytest

from attnkit.errors import ConfigError
from attnkit.training import TrainConfig
from attnkit.training.distributed import init_distributed, resolve_parallel


def test_auto_is_ddp_with_several_processes_and_none_with_one():
    assert [resolve_parallel(p, 1) for p in ("auto", "none", "ddp", "fsdp")] == ["none"] * 4
    assert [resolve_parallel(p, 4) for p in ("auto", "ddp", "fsdp")] == ["ddp", "ddp", "fsdp"]
    with pytest.raises(ConfigError, match="parallel=none but torchrun started 4 processes"):
        resolve_parallel("none", 4)


def test_a_fixed_gpu_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="each process takes GPU LOCAL_RANK"):
        init_distributed("cuda:1")


def test_one_process_needs_no_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert init_distributed("auto") == (0, 1)


@pytest.mark.parametrize(("assignments", "message"), [
    (["execution.parallel=fsdp", "execution.precision=fp16"], "FSDP's bf16"),
    (["execution.precision=fp16", "execution.cuda_graphs=true"], "loss scaling"),
    (["execution.parallel=fsdp", "reg.ema_decay=0.9"], "ema_decay"),
])
def test_combinations_that_cannot_work_are_refused(assignments, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig().with_overrides(assignments)


def test_the_keys_are_set_from_the_command_line():
    cfg = TrainConfig().with_overrides(["execution.parallel=fsdp", "execution.checkpointing=true", "execution.precision=bf16"])
    assert (cfg.execution.parallel, cfg.execution.checkpointing, cfg.execution.precision) == ("fsdp", True, "bf16")
    with pytest.raises(ConfigError, match="parallel"):
        TrainConfig().with_overrides(["execution.parallel=horovod"])
