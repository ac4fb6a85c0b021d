"""``to_device`` against ``Tensor.to``: same values, dtype and device; None passes through."""

from __future__ import annotations

import pytest
import torch

from attnkit.data.transfer import to_device
from attnkit.training.finetune import Batch


def test_none_and_cpu() -> None:
    assert to_device(None, "cpu") is None
    t = torch.arange(12).reshape(3, 4)
    out = to_device(t, "cpu")
    assert out.device.type == "cpu" and torch.equal(out, t.to("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_copy_equals_tensor_to() -> None:
    t = torch.randint(0, 1000, (32, 57))
    out = to_device(t, "cuda")
    torch.cuda.synchronize()
    assert out.is_cuda and out.dtype == t.dtype and torch.equal(out.cpu(), t)
    assert to_device(out, "cuda") is out or torch.equal(to_device(out, "cuda"), out)  # already there: no pinning
    b = Batch(t, torch.zeros_like(t), torch.ones_like(t), torch.zeros(32, dtype=torch.long), list(range(32))).to(torch.device("cuda"))
    assert all(x.is_cuda for x in (b.ids, b.segment_ids, b.attention_mask, b.targets)) and torch.equal(b.ids.cpu(), t)


def test_lm_batches_reach_the_device_through_to_device(monkeypatch) -> None:
    """The LM tasks' window offsets and windows, drawn on the host, move through ``to_device`` (pinned memory and an
    asynchronous copy on CUDA), never by a plain ``.to(device)`` that would wait for the queued steps; the batches are
    the windows the offsets name."""
    import attnkit.data.lm as lm
    from attnkit.data.lm import LMTask

    moved: list[torch.Tensor] = []

    def record(t: torch.Tensor | None, device: torch.device | str) -> torch.Tensor | None:
        moved.append(t)  # type: ignore[arg-type]
        return to_device(t, device)

    monkeypatch.setattr(lm, "to_device", record)
    data = torch.arange(500)
    task = LMTask(data[:450], data[450:], context=8, batch_size=4, log=lambda s: None)
    batch = next(iter(task.batches(0, 0)))
    assert len(moved) == 1 and moved[0].device.type == "cpu" and moved[0].shape == (4,)
    assert torch.equal(batch, moved[0][:, None] + torch.arange(9))  # data[i] == i: each row is its window
    on = task.on_device(task.make_batch(0, 0, 0))
    assert len(moved) == 2 and torch.equal(on, batch)
