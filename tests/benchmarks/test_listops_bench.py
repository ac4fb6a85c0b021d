"""benchmarks/listops.py: the step-time probe runs past the end of one epoch of a small training split."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("listops")


def test_probe_takes_more_steps_than_one_epoch_has(bench):
    from attnkit.models.encoder_classifier import classifier_preset
    from attnkit.training.config import OptimConfig, TrainConfig
    from attnkit.training.listops import ListOpsDataConfig, ListOpsTask, build_model, make_splits

    data = ListOpsDataConfig(train_size=20, valid_size=4, test_size=4, min_len=10, max_len=40, pad_to=16, workers=1)
    splits = make_splits(data, log=lambda s: None)
    task = ListOpsTask(splits["train"], splits["validation"], batch_size=8, pad_to=16)
    assert len(list(task.batches(0, 12345))) == 3  # one epoch: 3 batches, fewer than the 5 probe steps
    model = build_model(classifier_preset("listops-tiny", n_layers=1).replace(mask_padding=False))
    cfg = TrainConfig(steps=5, device="cpu", optim=OptimConfig(lr=1e-3))
    assert bench.seconds_per_step(model, task, cfg, torch.device("cpu"), 5) > 0
