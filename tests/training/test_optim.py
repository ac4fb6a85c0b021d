"""Adam/AdamW from build_optimizer against Kingma & Ba's update written out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attnkit.training.optim import build_optimizer


class _Holder(nn.Module):
    def __init__(self, **params: torch.Tensor) -> None:
        super().__init__()
        for name, value in params.items():
            self.register_parameter(name, nn.Parameter(value.clone()))


def _adam_by_hand(theta: list[float], grads: list[list[float]], lr: float, b1: float, b2: float, eps: float,
                  decoupled_decay: float = 0.0) -> list[float]:
    """Kingma & Ba 2015, Algorithm 1, in plain Python floats (plus AdamW's decoupled decay)."""
    theta = list(theta)
    m = [0.0] * len(theta)
    v = [0.0] * len(theta)
    for t, g in enumerate(grads, start=1):
        for i, gi in enumerate(g):
            theta[i] -= lr * decoupled_decay * theta[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            m_hat = m[i] / (1 - b1**t)
            v_hat = v[i] / (1 - b2**t)
            theta[i] -= lr * m_hat / (math.sqrt(v_hat) + eps)
    return theta


GRADS = [[0.5, -2.0, 1e-3, 0.0], [-0.25, 3.0, 0.2, 1.0]]


def test_adam_two_steps_match_hand_written_update() -> None:
    theta0 = [1.0, -0.5, 2.0, 0.0]
    model = _Holder(w=torch.tensor(theta0, dtype=torch.float64))
    opt = build_optimizer(model, "adam", lr=0.01)
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.98) and group["eps"] == 1e-9 and group["weight_decay"] == 0.0
    for t, g in enumerate(GRADS, start=1):
        model.w.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        expected = _adam_by_hand(theta0, GRADS[:t], lr=0.01, b1=0.9, b2=0.98, eps=1e-9)
        torch.testing.assert_close(model.w.detach(), torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_adamw_two_steps_match_hand_written_update() -> None:
    theta0 = [1.0, -0.5, 2.0, 0.0]
    model = _Holder(w=torch.tensor([theta0], dtype=torch.float64))  # 2-D: decayed
    opt = build_optimizer(model, "adamw", lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    for t, g in enumerate(GRADS, start=1):
        model.w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        expected = _adam_by_hand(theta0, GRADS[:t], lr=0.01, b1=0.8, b2=0.99, eps=1e-6, decoupled_decay=0.1)
        torch.testing.assert_close(model.w.detach()[0], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_adamw_groups_exclude_params_below_2d() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 3, bias=False))
    opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.01)
    by_decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert set(by_decay) == {0.01, 0.0}
    assert by_decay[0.01] == {id(p) for p in model.parameters() if p.ndim >= 2}
    assert by_decay[0.0] == {id(model[1].bias), id(model[2].weight), id(model[2].bias)}


def test_tied_and_frozen_parameters() -> None:
    emb = nn.Embedding(6, 4)
    head = nn.Linear(4, 6, bias=False)
    head.weight = emb.weight  # tied: must appear once
    frozen = nn.Linear(4, 4)
    frozen.requires_grad_(False)
    model = nn.ModuleList([emb, head, frozen])
    opt = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.1)
    params = [p for g in opt.param_groups for p in g["params"]]
    assert len(params) == 1 and params[0] is emb.weight


def test_zero_weight_decay_is_one_group_and_cpu_uses_foreach() -> None:
    opt = build_optimizer(nn.Linear(3, 3), "adamw", lr=1e-3)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.0
    assert opt.defaults["foreach"] is True and not opt.defaults["fused"]
    assert isinstance(opt, torch.optim.AdamW)
    assert isinstance(build_optimizer(nn.Linear(3, 3), "adam", lr=1e-3), torch.optim.Adam)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"kind": "sgd", "lr": 1e-3}, "kind"),
        ({"kind": "adam", "lr": -1.0}, "lr"),
        ({"kind": "adam", "lr": 1e-3, "betas": (0.9, 1.0)}, "betas"),
        ({"kind": "adam", "lr": 1e-3, "eps": -1e-9}, "eps"),
        ({"kind": "adamw", "lr": 1e-3, "weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_rejects_bad_args(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build_optimizer(nn.Linear(2, 2), **kwargs)


def test_rejects_model_without_trainable_parameters() -> None:
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="trainable"):
        build_optimizer(model, "adam", lr=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_uses_fused() -> None:
    opt = build_optimizer(nn.Linear(3, 3).cuda(), "adam", lr=1e-3)
    assert opt.defaults["fused"] is True
