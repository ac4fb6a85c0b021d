"""Training a model with Switch layers: the auxiliary router losses added to any task's loss, and the expert load in its metrics.

:class:`SwitchTask` wraps a task (:class:`~attnkit.training.tasks.Task`): its loss is the task's plus, for
the Switch layers of the forward just run, ``aux_loss * sum of the load-balancing losses + z_loss * sum of the
router z-losses`` over the layers (the coefficients of :class:`~attnkit.layers.moe.MoEConfig`). Each Switch layer
carries its own auxiliary loss, as in Fedus et al. (2021, section 2.2) and their Mesh TensorFlow code; Hugging
Face's Switch Transformers averages over the layers instead, which is ``aux_loss / L`` here. Each loss counts
the real tokens only
(:mod:`attnkit.objectives.moe`). Its evaluation adds the expert load of the training steps since the
last one (:func:`~attnkit.layers.moe.expert_load`) and the held-out router losses.
"""

from __future__ import annotations

from typing import Any, Iterator

from torch import Tensor, nn

from attnkit.layers.moe import expert_load, mark_padding, switch_layers
from attnkit.objectives.moe import load_balancing_loss, router_losses, router_z_loss


def switch_aux_loss(model: nn.Module) -> tuple[Tensor, Tensor, Tensor] | None:
    """The weighted auxiliary loss of the last forward's Switch layers, and its two means (None without Switch layers).

    Returns:
        ``(aux_loss * L * balance + z_loss * L * z, balance, z)``: the weighted sum over the L layers, then the
        means over the layers (for the metrics).
    """
    layers = [m for m in switch_layers(model) if m.router_logits is not None]
    if not layers:
        return None
    pairs = [m.router_loss_values if m.router_loss_values is not None  # a training forward's, computed in the layer
             else router_losses(m.router_logits, m.router_probs, m.first_choices, m.keep_used)  # type: ignore[arg-type]
             if m.first_choices is not None and m.router_probs is not None
             else (load_balancing_loss(m.router_logits, m.keep_used), router_z_loss(m.router_logits, m.keep_used))  # type: ignore[arg-type]
             for m in layers]
    balance = sum(b for b, _ in pairs) / len(layers)
    z = sum(z for _, z in pairs) / len(layers)
    c = layers[0].config
    n = len(layers)
    return n * (c.aux_loss * balance + c.z_loss * z), balance, z  # type: ignore[return-value]


class SwitchTask:
    """A task whose model has Switch layers: the same batches and evaluation, the router losses added to the loss."""

    def __init__(self, task: Any, model: nn.Module) -> None:
        self.task = task
        mark_padding(model)
        if hasattr(task, "varying_lengths"):
            self.varying_lengths = task.varying_lengths

    def __getattr__(self, name: str) -> Any:  # input_tokens, epoch helpers, ...: the wrapped task's
        task = self.__dict__.get("task")
        if task is None:  # not yet initialised (copy, pickle)
            raise AttributeError(name)
        return getattr(task, name)

    def batches(self, epoch: int, seed: int) -> Iterator[Any]:
        return self.task.batches(epoch, seed)

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        loss, n = self.task.loss(model, batch)
        aux = switch_aux_loss(model)
        return (loss + aux[0], n) if aux is not None else (loss, n)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out = dict(self.task.evaluate(model))
        aux = switch_aux_loss(model)  # of the last held-out batch
        if aux is not None:
            out.update(moe_balance_loss=float(aux[1].detach()), moe_z_loss=float(aux[2].detach()))
        out.update(expert_load(model))
        return out


def wrap_switch(model: nn.Module, task: Any) -> Any:
    """``task`` as a :class:`SwitchTask` when ``model`` has Switch layers, else unchanged."""
    return SwitchTask(task, model) if switch_layers(model) else task
