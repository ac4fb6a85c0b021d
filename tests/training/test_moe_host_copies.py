"""The Switch GPT's training step moves nothing between host and device, as a CUDA graph's capture requires
(:mod:`attnkit.training.graphs`: no host read of a device value, no copy of host memory into the step), checked
without a GPU by watching every operator of one step: forward, the task's loss with the router losses
(:class:`attnkit.training.moe.SwitchTask`), backward.

* On the ``meta`` device: an operator given a CPU tensor (a host tensor copied in with ``.to(device)``, or
  combined with device tensors: ``torch.arange`` without ``device=``) and a host read (``aten._local_scalar_dense``:
  ``.item()``, ``int(t)``, ``bool(t)``).
* On the CPU: a tensor made from host data (``aten.lift_fresh``: ``torch.tensor(3, device=...)``, ``torch.as_tensor`` of
  Python numbers, indexing with a Python list); on the meta device these are built without an operator to see.

The detector is checked first against each pattern it must catch and a few it must let through. The last test runs the
Trainer's step body (:meth:`attnkit.training.loop.Trainer._step_body`, the function a CUDA graph records) around the same
step, on the CPU.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest
import torch

from attnkit.layers.moe import MoEConfig, switch_layers
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.objectives import causal_lm_loss
from attnkit.training.config import TrainConfig
from attnkit.training.loop import Trainer
from attnkit.training.moe import SwitchTask
from tests.training.host_traffic import traffic


BAD: dict[str, Callable[[torch.Tensor], Any]] = {
    "item": lambda x: x.sum().item(),
    "int": lambda x: int(x.sum()),
    "bool": lambda x: bool(x.sum() > 0),
    "arange without device": lambda x: x + torch.arange(x.shape[-1]),
    "host tensor moved": lambda x: x * torch.ones(x.shape[-1]).to(x.device),
    "torch.tensor of a number": lambda x: x * torch.tensor(2.0, device=x.device),
    "as_tensor of a number": lambda x: x * torch.as_tensor(3, device=x.device),
    "index with a list": lambda x: x[..., [0, 2]],
    "index with a boolean mask": lambda x: x[x > 0].sum(),
}
GOOD: dict[str, Callable[[torch.Tensor], Any]] = {
    "python scalars": lambda x: torch.where(x > 0, x * 2.0, 0.0).clamp(max=3),
    "factories on the device": lambda x: x + torch.arange(x.shape[-1], device=x.device) + x.new_zeros(x.shape[-1]),
    "shapes as ints": lambda x: x.reshape(x.shape[0] * x.shape[1], -1)[: x.shape[0]],
}


@pytest.mark.parametrize("pattern", sorted(BAD))
def test_the_detector_catches_each_host_transfer_on_meta_or_cpu(pattern):
    fn = BAD[pattern]
    found = traffic("meta", lambda: fn(torch.randn(2, 3, device="meta"))) + traffic("cpu", lambda: fn(torch.randn(2, 3)))
    assert found, pattern


@pytest.mark.parametrize("pattern", sorted(GOOD))
def test_the_detector_lets_device_side_code_through(pattern):
    fn = GOOD[pattern]
    assert traffic("meta", lambda: fn(torch.randn(2, 3, device="meta"))) == []
    assert traffic("cpu", lambda: fn(torch.randn(2, 3))) == []


class WindowTask:
    """Next-token prediction on windows ``(B, T + 1)``, as :class:`attnkit.data.lm.LMTask` computes its loss."""

    def loss(self, model: torch.nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        loss, _ = causal_lm_loss(model(batch[:, :-1]).logits, batch[:, 1:])
        return loss, batch[:, 1:].numel()


def switch_step(device: str, top_k: int, padded: bool) -> Callable[[], None]:
    """One training step of a tiny Switch GPT on ``device``: forward, task loss plus router losses, backward."""
    torch.manual_seed(top_k)
    moe = MoEConfig(n_experts=4, top_k=top_k, capacity_factor=0.75, jitter=0.1)
    config = GPTConfig(vocab_size=40, context=16, n_layers=2, n_heads=2, d_model=16, dropout=0.1, ffn="switch", moe=moe)
    model = GPT(config).to(device).train()
    if padded:  # as mark_padding marks a model with a pad id (BERT, the encoder-decoder): id 0 is padding here
        layers = switch_layers(model)

        def set_keep(_module: torch.nn.Module, args: tuple[Any, ...]) -> None:
            for layer in layers:
                layer.keep = args[0] != 0

        model.tok_embed.register_forward_pre_hook(set_keep)
    task = SwitchTask(WindowTask(), model)
    batch = torch.randint(0, 40, (3, 17), device=device)

    def step() -> None:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if device == "cpu" else torch.autocast("cpu", enabled=False)
        with autocast:
            loss, n = task.loss(model, batch)
        (loss * n).backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    return step


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_a_switch_training_step_moves_nothing_between_host_and_device(device, top_k, padded):
    step = switch_step(device, top_k, padded)
    assert traffic(device, step) == []


def test_the_trainers_step_body_brings_no_host_data_into_a_switch_step(tmp_path):
    """The whole recorded body but the optimizer's update: its CPU implementation keeps its step counts on the host,
    where the capturable fused Adam of a recorded step keeps them on the device (attnkit.training.optim)."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=40, context=16, n_layers=2, n_heads=2, d_model=16, ffn="switch", moe=MoEConfig(n_experts=4))
    model = GPT(config)
    trainer = Trainer(model, SwitchTask(WindowTask(), model), TrainConfig(steps=1, device="cpu"), tmp_path, progress=False)
    trainer.optimizer.step = lambda *args, **kwargs: None  # type: ignore[method-assign]
    batch = torch.randint(0, 40, (3, 17))
    trainer._step_body([batch])  # eager first, as GraphedSteps runs a batch signature before recording it
    assert traffic("cpu", lambda: trainer._step_body([batch])) == []
