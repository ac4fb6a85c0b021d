"""Optimizers: Adam as used by the Transformer, and AdamW.

Vaswani et al. 2017, section 5.3: "We used the Adam optimizer [Kingma & Ba 2015]
with beta1 = 0.9, beta2 = 0.98 and epsilon = 1e-9"; those are the defaults here.
AdamW is Adam with decoupled weight decay (Loshchilov & Hutter 2019).

When ``weight_decay > 0`` the parameters are split into two param groups: those
with ``ndim >= 2`` (weight matrices and embedding tables) are decayed, those with
``ndim < 2`` (biases, LayerNorm gains and shifts) are not. For ``"adam"`` the decay
is torch's coupled L2 term (added to the gradient); for ``"adamw"`` it is decoupled.

A module can mark its own parameters: ``p.no_weight_decay = True`` keeps a table of biases
out of the decay (T5's relative bias table, :mod:`attnkit.positions.t5_bias`), and
``p.lr_scale = c`` trains ``p`` at ``c`` times the learning rate (a group with that
``lr_scale``, combined with layer-wise decay below).

Layer-wise learning-rate decay (Clark et al. 2020, "ELECTRA: Pre-training Text Encoders as
Discriminators Rather Than Generators", appendix, fine-tuning details): with ``layer_decay``
``xi < 1`` and ``L`` layers, encoder layer ``i`` (0-based) trains at ``lr * xi^(L - i)``, the
embeddings at ``lr * xi^(L + 1)``, and everything above the layers (pooler, task head, final
norm) at ``lr``. Each param group then carries ``lr_scale`` (its ``xi`` power) and
``lr = lr * lr_scale``; the schedules of :mod:`attnkit.training.schedules` multiply each
group's own initial lr, so the ratios between groups hold at every step. (ELECTRA's released
code puts every exponent one higher, the top layer at ``xi^2``: a leftover of a removed
pooler, by its author's account in google-research/electra, GitHub issue #51; this is the intended rule.)
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from attnkit.errors import ConfigError
from attnkit.models.bert import BertEmbeddings

OptimizerKind = Literal["adam", "adamw"]
OPTIMIZER_KINDS: tuple[str, ...] = ("adam", "adamw")


def _check_args(kind: str, lr: float, betas: tuple[float, float], eps: float, weight_decay: float, layer_decay: float) -> None:
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
    if not 0.0 < layer_decay <= 1.0:
        raise ConfigError(f"layer_decay={layer_decay!r} is not allowed; expected a number in (0, 1] (1 disables it)")


def layer_depths(model: nn.Module) -> tuple[dict[str, int], int]:
    """The depth of every parameter for layer-wise learning-rate decay (ELECTRA, Clark et al. 2020).

    The layers are the model's one ``nn.ModuleList`` named ``layers`` (``BertModel.layers``,
    ``Encoder.layers``): a parameter under its entry ``i`` has depth ``i + 1``. Parameters under
    the embeddings (a :class:`~attnkit.models.bert.BertEmbeddings`, with ALBERT's and ELECTRA's
    E -> H projection, or any ``nn.Embedding``) have depth 0; all others (pooler, task heads,
    a final norm) depth ``L + 1``.

    Args:
        model: the module; its parameters are named as in ``model.named_parameters()``.

    Returns:
        ``(depths, L)``: depth by parameter name, and the number of layers ``L``.

    Raises:
        ValueError: (a :class:`~attnkit.errors.ConfigError`) when the model has no stack of
            layers, more than one (an encoder-decoder), or one layer shared across depths (ALBERT).
    """
    what = type(model).__name__
    stacks = [(name, m) for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "layers" and isinstance(m, nn.ModuleList)]
    if not stacks:
        raise ConfigError(f"layer_decay needs a model with a stack of layers (an nn.ModuleList named 'layers'); {what} has none")
    if len(stacks) > 1:
        raise ConfigError(f"layer_decay needs one stack of layers; {what} has {len(stacks)} ({', '.join(n for n, _ in stacks)})")
    stack_name, stack = stacks[0]
    if len({id(layer) for layer in stack}) < len(stack):
        raise ConfigError(f"layer_decay needs separate layers; {what} shares one layer across its {len(stack)} depths (share_layers)")
    embeddings = [name for name, m in model.named_modules() if isinstance(m, (BertEmbeddings, nn.Embedding))]
    n_layers = len(stack)
    depths: dict[str, int] = {}
    prefix = f"{stack_name}."
    for name, _ in model.named_parameters():
        index = name[len(prefix):].split(".", 1)[0] if name.startswith(prefix) else ""
        if index.isdigit():  # (stack).i.(...): layer i
            depths[name] = int(index) + 1
        elif any(name.startswith(f"{e}.") for e in embeddings):
            depths[name] = 0
        else:
            depths[name] = n_layers + 1
    return depths, n_layers


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """Split the trainable parameters into decayed (ndim >= 2) and not decayed (ndim < 2 or marked
    ``no_weight_decay``), and with ``layer_decay < 1`` or a parameter's own ``lr_scale`` also by
    learning rate (module docstring; :func:`layer_depths`).

    Args:
        model: the module whose ``requires_grad`` parameters are optimised (tied
            parameters appear once).
        weight_decay: decay of the ``ndim >= 2`` parameters; 0 gives a single group
            (one per depth with ``layer_decay < 1``).
        layer_decay: ``xi`` of the module docstring; 1.0 gives no ``lr_scale`` groups.

    Returns:
        Param-group dicts for a torch optimizer, empty groups left out. With ``layer_decay < 1``
        (or a parameter with ``lr_scale``) one group per (``lr_scale``, weight decay), in the order
        of the parameters, each holding ``lr_scale = layer_decay ** (L + 1 - depth)`` times the
        parameter's own ``lr_scale``.
    """
    hinted = any(getattr(p, "lr_scale", 1.0) != 1.0 for p in model.parameters())
    if layer_decay == 1.0 and not hinted:
        params = [p for p in model.parameters() if p.requires_grad]
        if weight_decay == 0.0:
            return [{"params": params, "weight_decay": 0.0}]
        decay = [p for p in params if p.ndim >= 2 and not getattr(p, "no_weight_decay", False)]
        no_decay = [p for p in params if p.ndim < 2 or getattr(p, "no_weight_decay", False)]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]
    depths, n_layers = layer_depths(model) if layer_decay != 1.0 else ({}, 0)
    by_key: dict[tuple[float, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = (layer_decay ** (n_layers + 1 - depths[name]) if depths else 1.0) * getattr(p, "lr_scale", 1.0)
        decay = weight_decay if p.ndim >= 2 and not getattr(p, "no_weight_decay", False) else 0.0
        by_key.setdefault((scale, decay), {"params": [], "weight_decay": decay, "lr_scale": scale})["params"].append(p)
    return list(by_key.values())


def base_lr(optimizer: torch.optim.Optimizer) -> float:
    """The schedule's current lr: that of the full-lr groups (a group's ``lr`` over its ``lr_scale``)."""
    top = max(optimizer.param_groups, key=lambda g: g.get("lr_scale", 1.0))
    return top["lr"] / top.get("lr_scale", 1.0)


def build_optimizer(
    model: nn.Module,
    kind: OptimizerKind,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-9,
    weight_decay: float = 0.0,
    layer_decay: float = 1.0,
    capturable: bool = False,
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
        layer_decay: layer-wise learning-rate decay in (0, 1]; below 1 each group's lr is
            ``lr * lr_scale`` (see the module docstring and :func:`layer_depths`).
        capturable: an optimizer whose step can be recorded in a CUDA graph
            (:mod:`attnkit.training.graphs`): the fused kernel with ``capturable=True``; make
            each group's lr a device tensor with :func:`device_lrs` once the schedule is built.

    Returns:
        The optimizer.

    Raises:
        ValueError: (a :class:`~attnkit.errors.ConfigError`) naming the bad argument,
            or when the model has no trainable parameters, or ``layer_decay < 1`` on a model
            without separate layers (:func:`layer_depths`).
    """
    betas = tuple(betas)  # type: ignore[assignment]
    _check_args(kind, lr, betas, eps, weight_decay, layer_decay)
    groups = param_groups(model, weight_decay, layer_decay)
    for g in groups:
        if "lr_scale" in g:
            g["lr"] = lr * g["lr_scale"]
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ConfigError("model has no trainable parameters (none with requires_grad=True)")
    fused = all(p.is_cuda and p.is_floating_point() for p in params)
    if capturable and not fused:
        raise ConfigError("a capturable optimizer (cuda_graphs) needs every trainable parameter on a CUDA device; "
                          "move the model to the GPU or turn cuda_graphs off")
    impl: dict[str, bool] = {"fused": True, "capturable": capturable} if fused else {"foreach": True}
    cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **impl)


def device_lrs(optimizer: torch.optim.Optimizer) -> None:
    """Make every param group's ``lr`` a one-element float32 tensor on its parameters' device.

    A step recorded in a CUDA graph reads the lr from that tensor at every replay; the
    schedules (``LambdaLR``) fill it in place instead of replacing a Python number the graph
    would have baked in. Call it after :func:`~attnkit.training.schedules.build_scheduler`
    (which sets the lrs) and after loading an optimizer state (which replaces them)."""
    for g in optimizer.param_groups:
        g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=g["params"][0].device)


def scheduled_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> float:
    """The lr the next optimizer step uses, as :func:`base_lr` reports it, computed from the schedule
    on the host (no read of a device-tensor lr)."""
    groups = scheduler.optimizer.param_groups
    i = max(range(len(groups)), key=lambda j: groups[j].get("lr_scale", 1.0))
    return scheduler.base_lrs[i] * scheduler.lr_lambdas[i](scheduler.last_epoch) / groups[i].get("lr_scale", 1.0)
