"""Optimizers: Adam as used by the Transformer, and AdamW.

Vaswani et al. 2017, section 5.3: "We used the Adam optimizer [Kingma & Ba 2015]
with beta1 = 0.9, beta2 = 0.98 and epsilon = 1e-9"; those are the defaults here.
AdamW is Adam with decoupled weight decay (Loshchilov & Hutter 2019).

When ``weight_decay > 0`` the parameters are split into two param groups: those
with ``ndim >= 2`` (weight matrices and embedding tables) are decayed, those with
``ndim < 2`` (biases, LayerNorm gains and shifts) are not. For ``"adam"`` the decay
is torch's coupled L2 term (added to the gradient); for ``"adamw"`` it is decoupled.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from attnkit.errors import ConfigError

OptimizerKind = Literal["adam", "adamw"]
OPTIMIZER_KINDS: tuple[str, ...] = ("adam", "adamw")


def _check_args(kind: str, lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    if kind not in OPTIMIZER_KINDS:
        raise ConfigError(f"kind={kind!r} is not allowed; expected one of {', '.join(map(repr, OPTIMIZER_KINDS))}")
    if not lr >= 0.0:
        raise ConfigError(f"lr={lr!r} is not allowed; expected a number >= 0")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"betas={betas!r} is not allowed; expected two numbers in [0, 1)")
    if not eps >= 0.0:
        raise ConfigError(f"eps={eps!r} is not allowed; expected a number >= 0")
    if not weight_decay >= 0.0:
        raise ConfigError(f"weight_decay={weight_decay!r} is not allowed; expected a number >= 0")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split the trainable parameters into decayed (ndim >= 2) and not decayed (ndim < 2).

    Args:
        model: the module whose ``requires_grad`` parameters are optimised (tied
            parameters appear once).
        weight_decay: decay of the first group; 0 gives a single group.

    Returns:
        Param-group dicts for a torch optimizer, empty groups left out.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if weight_decay == 0.0:
        return [{"params": params, "weight_decay": 0.0}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    kind: OptimizerKind,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-9,
    weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """Build torch's Adam or AdamW over a model's trainable parameters.

    Uses the fused kernel when every parameter is a floating-point CUDA tensor, the
    ``foreach`` (multi-tensor) implementation otherwise.

    Args:
        model: the module to optimise.
        kind: ``"adam"`` (Kingma & Ba 2015) or ``"adamw"`` (decoupled weight decay).
        lr: learning rate (the peak, for a schedule that multiplies it; ignored by
            the noam schedule, which sets it).
        betas: ``(beta1, beta2)``; the paper's ``(0.9, 0.98)`` by default.
        eps: the denominator's epsilon; the paper's ``1e-9`` by default.
        weight_decay: decay of the ``ndim >= 2`` parameters; ``ndim < 2`` ones are
            never decayed (see the module docstring).

    Returns:
        The optimizer.

    Raises:
        ValueError: (a :class:`~attnkit.errors.ConfigError`) naming the bad argument,
            or when the model has no trainable parameters.
    """
    betas = tuple(betas)  # type: ignore[assignment]
    _check_args(kind, lr, betas, eps, weight_decay)
    groups = param_groups(model, weight_decay)
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ConfigError("model has no trainable parameters (none with requires_grad=True)")
    fused = all(p.is_cuda and p.is_floating_point() for p in params)
    impl: dict[str, bool] = {"fused": True} if fused else {"foreach": True}
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **impl)
