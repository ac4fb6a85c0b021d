"""The grouped dispatch of the Switch layer (``MoEConfig.dispatch="grouped"``) against the capacity buffer: the same
outputs, gradients and load counts, drops and padding included; where the grouped product does not run, the buffer."""

from __future__ import annotations

import pytest
import torch

from attnkit.config import ConfigError
from attnkit.layers import moe
from attnkit.layers.moe import MoEConfig, SwitchFFN

pytestmark = pytest.mark.skipif(not moe.grouped_mm_runs("cpu", torch.bfloat16), reason="no torch._grouped_mm on this CPU build")


def pair(top_k: int, bias: bool = True) -> tuple[SwitchFFN, SwitchFFN]:
    torch.manual_seed(top_k)
    capacity = SwitchFFN(16, 32, activation_name="gelu", bias=bias, config=MoEConfig(n_experts=4, top_k=top_k, capacity_factor=0.75))
    grouped = SwitchFFN(16, 32, activation_name="gelu", bias=bias,
                        config=MoEConfig(n_experts=4, top_k=top_k, capacity_factor=0.75, dispatch="grouped"))
    grouped.load_state_dict(capacity.state_dict())
    return capacity.train(), grouped.train()


def outputs_and_grads(capacity: SwitchFFN, grouped: SwitchFFN, x: torch.Tensor) -> list[tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
    got = []
    for layer in (capacity, grouped):
        xi = x.clone().requires_grad_(True)
        out = layer(xi)
        weights = torch.linspace(-1, 1, out.numel()).view_as(out)
        got.append((out.detach(), torch.autograd.grad((out.float() * weights).sum(), [xi, *layer.parameters()])))
    return got


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_grouped_dispatch_gives_the_buffers_outputs_gradients_and_loads(top_k: int, padded: bool, bias: bool,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """float32, the grouped path forced on (its product runs in float32 on the CPU): the buffer's numbers."""
    capacity, grouped = pair(top_k, bias)
    monkeypatch.setattr(SwitchFFN, "_groups", lambda self, tokens: self.config.dispatch == "grouped")
    keep = torch.tensor([[True] * 10 + [False] * 2, [True] * 12]) if padded else None
    capacity.keep, grouped.keep = keep, keep
    (out_c, grads_c), (out_g, grads_g) = outputs_and_grads(capacity, grouped, torch.randn(2, 12, 16))
    torch.testing.assert_close(out_g, out_c, atol=1e-6, rtol=1e-5)
    assert capacity.dropped.sum() > 0  # some choices were over capacity: their rows are 0 on both paths
    for a, b in zip(grads_g, grads_c):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert torch.equal(grouped.load, capacity.load) and torch.equal(grouped.dropped, capacity.dropped)


def test_under_autocast_the_grouped_product_runs_and_agrees_in_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    capacity, grouped = pair(1)
    calls: list[int] = []
    run = SwitchFFN.run_grouped
    monkeypatch.setattr(SwitchFFN, "run_grouped", lambda self, *a: calls.append(1) or run(self, *a))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out_c, grads_c), (out_g, grads_g) = outputs_and_grads(capacity, grouped, torch.randn(2, 12, 16))
        torch._dynamo.reset()
        compiled = torch.compile(grouped, backend="eager", fullgraph=True)(torch.randn(2, 12, 16))
    assert calls and compiled.shape == (2, 12, 16)
    torch.testing.assert_close(out_g.float(), out_c.float(), atol=2e-2, rtol=2e-2)
    for a, b in zip(grads_g, grads_c):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=5e-2)


def test_without_the_grouped_product_the_layer_takes_the_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    capacity, grouped = pair(1)
    calls: list[int] = []
    monkeypatch.setattr(moe, "grouped_mm_runs", lambda device_type, dtype: False)
    monkeypatch.setattr(SwitchFFN, "run_grouped", lambda self, *a: calls.append(1))
    x = torch.randn(2, 12, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(grouped(x), capacity(x), atol=0, rtol=0)
    torch.testing.assert_close(grouped(x), capacity(x), atol=0, rtol=0)  # float32: the buffer too
    assert not calls


def test_a_dispatch_that_does_not_exist_is_named() -> None:
    with pytest.raises(ConfigError, match="moe.dispatch"):
        MoEConfig(dispatch="sorted")


def test_the_probe_answers_the_same_under_inference_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first forward in evaluation (inference mode) must not record the grouped product as missing."""
    monkeypatch.setattr(moe, "_GROUPED_MM", {})
    with torch.inference_mode():
        assert moe.grouped_mm_runs("cpu", torch.bfloat16)
