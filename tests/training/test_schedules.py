"""Learning-rate schedules against the formulas written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.training.schedules import (
    build_scheduler,
    constant,
    linear_warmup_cosine_decay,
    linear_warmup_linear_decay,
    noam,
)


def _noam_by_hand(step: int, d_model: int, warmup: int, factor: float = 1.0) -> float:
    # Vaswani et al. 2017, section 5.3: d_model^-0.5 * min(step^-0.5, step * warmup_steps^-1.5)
    return factor * (1.0 / math.sqrt(d_model)) * min(1.0 / math.sqrt(step), step / warmup ** 1.5)


@pytest.mark.parametrize("d_model", [64, 512, 1024])
@pytest.mark.parametrize("warmup", [10, 4000])
def test_noam_matches_formula(d_model: int, warmup: int) -> None:
    for step in (1, warmup - 1, warmup, warmup + 1, 10 * warmup):
        assert noam(step, d_model, warmup) == pytest.approx(_noam_by_hand(step, d_model, warmup), rel=1e-12)
    assert noam(7, d_model, warmup, factor=2.0) == pytest.approx(2.0 * _noam_by_hand(7, d_model, warmup), rel=1e-12)


def test_noam_paper_values() -> None:
    # d_model=512, warmup=4000: peak (512 * 4000)^-0.5 at step 4000.
    assert noam(4000, 512, 4000) == pytest.approx(1.0 / math.sqrt(512 * 4000), rel=1e-12)
    assert noam(1, 512, 4000) == pytest.approx(1.0 / (math.sqrt(512) * 4000**1.5), rel=1e-12)


def test_noam_peak_at_warmup() -> None:
    warmup = 50
    values = [noam(s, 256, warmup) for s in range(1, 10 * warmup)]
    assert max(range(len(values)), key=values.__getitem__) + 1 == warmup


def test_noam_step_zero_is_step_one() -> None:
    assert noam(0, 512, 4000) == noam(1, 512, 4000)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"step": -1, "d_model": 8, "warmup": 4}, "step"),
        ({"step": 1, "d_model": 0, "warmup": 4}, "d_model"),
        ({"step": 1, "d_model": 8, "warmup": 0}, "warmup"),
        ({"step": 1, "d_model": 8, "warmup": 4, "factor": 0.0}, "factor"),
    ],
)
def test_noam_rejects_bad_args(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        noam(**kwargs)


def test_linear_endpoints() -> None:
    assert linear_warmup_linear_decay(0, 10, 100) == 0.0
    assert linear_warmup_linear_decay(5, 10, 100) == pytest.approx(0.5)
    assert linear_warmup_linear_decay(10, 10, 100) == 1.0
    assert linear_warmup_linear_decay(55, 10, 100) == pytest.approx(0.5)
    assert linear_warmup_linear_decay(100, 10, 100) == 0.0
    assert linear_warmup_linear_decay(150, 10, 100) == 0.0
    assert linear_warmup_linear_decay(0, 0, 100) == 1.0


def test_cosine_endpoints() -> None:
    assert linear_warmup_cosine_decay(0, 10, 110) == 0.0
    assert linear_warmup_cosine_decay(10, 10, 110) == 1.0
    assert linear_warmup_cosine_decay(60, 10, 110) == pytest.approx(0.5)
    assert linear_warmup_cosine_decay(110, 10, 110) == pytest.approx(0.0, abs=1e-15)
    assert linear_warmup_cosine_decay(110, 10, 110, min_ratio=0.1) == pytest.approx(0.1)
    assert linear_warmup_cosine_decay(60, 10, 110, min_ratio=0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert linear_warmup_cosine_decay(500, 10, 110, min_ratio=0.1) == pytest.approx(0.1)


def test_constant() -> None:
    assert constant(1) == 1.0
    assert constant(0, warmup=4) == 0.0
    assert constant(2, warmup=4) == 0.5
    assert constant(4, warmup=4) == 1.0
    assert constant(100, warmup=4) == 1.0


@pytest.mark.parametrize(
    "fn, kwargs, name",
    [
        (linear_warmup_linear_decay, {"step": 1, "warmup": 10, "total": 10}, "total"),
        (linear_warmup_linear_decay, {"step": 1, "warmup": -1, "total": 10}, "warmup"),
        (linear_warmup_cosine_decay, {"step": -2, "warmup": 1, "total": 10}, "step"),
        (linear_warmup_cosine_decay, {"step": 1, "warmup": 1, "total": 10, "min_ratio": 1.5}, "min_ratio"),
    ],
)
def test_decay_rejects_bad_args(fn, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        fn(**kwargs)


schedule_args = st.integers(0, 50).flatmap(
    lambda w: st.tuples(st.just(w), st.integers(w + 1, w + 200), st.floats(0.0, 1.0))
)


@settings(max_examples=60, deadline=None)
@given(schedule_args)
def test_warmup_increasing_then_decay_monotonic(args: tuple[int, int, float]) -> None:
    warmup, total, min_ratio = args
    for fn in (
        lambda s: linear_warmup_linear_decay(s, warmup, total),
        lambda s: linear_warmup_cosine_decay(s, warmup, total, min_ratio),
    ):
        values = [fn(s) for s in range(0, total + 20)]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert values[warmup] == 1.0
        warm, decay = values[: warmup + 1], values[warmup:]
        assert all(a <= b for a, b in zip(warm, warm[1:]))
        assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert linear_warmup_linear_decay(total, warmup, total) == 0.0
    assert linear_warmup_cosine_decay(total, warmup, total, min_ratio) == pytest.approx(min_ratio, abs=1e-12)


def _lrs_used(optimizer: torch.optim.Optimizer, scheduler, n_steps: int) -> list[float]:
    """Record the lr each optimizer step actually runs with."""
    param = optimizer.param_groups[0]["params"][0]
    used = []
    for _ in range(n_steps):
        param.grad = torch.ones_like(param)
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return used


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam])
def test_noam_scheduler_lr_of_step_s_is_noam_s(opt_cls) -> None:
    param = torch.nn.Parameter(torch.zeros(3))
    optimizer = opt_cls([param], lr=0.123)
    scheduler = build_scheduler(optimizer, "noam", warmup=4, total_steps=10, d_model=16, factor=2.0)
    used = _lrs_used(optimizer, scheduler, 10)
    expected = [_noam_by_hand(s, 16, 4, 2.0) for s in range(1, 11)]
    assert used == pytest.approx(expected, rel=1e-12)
    # after k = 10 steps, get_last_lr is the lr of the next step, k + 1
    assert scheduler.get_last_lr()[0] == pytest.approx(_noam_by_hand(11, 16, 4, 2.0), rel=1e-12)


def test_noam_scheduler_checks_by_plain_sgd_update() -> None:
    # With SGD, param after step s moves by exactly -lr_s * grad: an independent check of the lr used.
    param = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    optimizer = torch.optim.SGD([param], lr=5.0)
    scheduler = build_scheduler(optimizer, "noam", warmup=3, total_steps=6, d_model=8)
    for s in range(1, 7):
        before = param.detach().clone()
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
        assert (before - param.detach()).item() == pytest.approx(_noam_by_hand(s, 8, 3), rel=1e-12)


@pytest.mark.parametrize(
    "kind, fn",
    [
        ("linear", lambda s: linear_warmup_linear_decay(s, 3, 10)),
        ("cosine", lambda s: linear_warmup_cosine_decay(s, 3, 10)),
        ("constant", lambda s: constant(s, 3)),
    ],
)
def test_multiplier_scheduler_scales_base_lr(kind: str, fn) -> None:
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = build_scheduler(optimizer, kind, warmup=3, total_steps=10)
    used = _lrs_used(optimizer, scheduler, 12)
    assert used == pytest.approx([0.5 * fn(s) for s in range(1, 13)], abs=1e-15)


@pytest.mark.parametrize(
    "kind, kwargs, name",
    [
        ("noam", {"warmup": 4, "total_steps": 10}, "d_model"),
        ("noam", {"warmup": 0, "total_steps": 10, "d_model": 8}, "warmup"),
        ("noam", {"warmup": 4, "total_steps": 10, "d_model": 8, "factor": -1.0}, "factor"),
        ("linear", {"warmup": 10, "total_steps": 10}, "total_steps"),
        ("cosine", {"warmup": 4, "total_steps": 0}, "total_steps"),
        ("constant", {"warmup": -1, "total_steps": 10}, "warmup"),
        ("exponential", {"warmup": 4, "total_steps": 10}, "kind"),
    ],
)
def test_build_scheduler_rejects_bad_args(kind: str, kwargs: dict, name: str) -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=name):
        build_scheduler(optimizer, kind, **kwargs)  # type: ignore[arg-type]
