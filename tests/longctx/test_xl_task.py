"""The Transformer-XL language-modelling task: memory carried across training batches row by row, evaluation
with and without memory, and the run path's refusals."""

from __future__ import annotations

import pytest
import torch

from attnkit import recipes, runs
from attnkit.data.segments import XLLMTask
from attnkit.errors import ConfigError
from attnkit.models.gpt import GPT, gpt_preset
from attnkit.models.transformer import AttentionConfig
from attnkit.objectives.causal_lm import causal_lm_loss
from attnkit.positions.config import PositionConfig


def test_memory_carried_across_batches_in_the_right_rows() -> None:
    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny", attention=AttentionConfig(position=PositionConfig(kind="xl_relative")))).double().eval()
    stream = torch.randint(0, 96, (3 * 40,))
    task = XLLMTask(stream, stream[:60], segment=6, mem_len=6, batch_size=3)
    batches = list(task.batches(0, 0))
    with torch.no_grad():
        task.loss(model, batches[0])
        got, n = task.loss(model, batches[1])
        rows = torch.cat([batches[0].tokens[:, :-1], batches[1].tokens], dim=1)  # (3, 13): each row's text so far
        want, _ = causal_lm_loss(model(rows[:, :-1]).logits[:, 6:], rows[:, 7:])  # one forward over both segments
    assert n == 18
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # a new epoch starts without memory
    epoch1 = next(iter(task.batches(1, 0)))
    assert epoch1.first


def test_evaluation_with_and_without_memory() -> None:
    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny", attention=AttentionConfig(position=PositionConfig(kind="xl_relative")))).eval()
    valid = torch.randint(0, 96, (200,))
    task = XLLMTask(valid, valid, segment=8, mem_len=8, batch_size=2)
    scores = task.evaluate(model)
    assert set(scores) == {"loss", "loss_no_memory"} and scores["loss"] != scores["loss_no_memory"]
    # without memory, each segment alone: the mean of independent windows
    segs = valid[: 2 * (200 // 2)].view(2, 100)
    want = []
    with torch.no_grad():
        for s in range(0, 99 - 8 + 1, 8):
            if s + 9 > 100:
                break
            w = segs[:, s : s + 9]
            want.append(causal_lm_loss(model(w[:, :-1]).logits, w[:, 1:])[0])
    assert abs(scores["loss_no_memory"] - float(torch.stack(want).mean())) < 1e-5


@pytest.mark.parametrize("sets,match", [
    (["model.attention.position.kind=rotary"], "relative positions"),
    (["data.mem_len=200"], "more than model.context"),
    (["data.segment=0"], "must be positive for a memory"),
])
def test_run_path_refuses(sets: list[str], match: str) -> None:
    job = runs.job("lm")
    with pytest.raises(ConfigError, match=match):
        cfgs = runs.resolve_configs(job, recipe=recipes.get("shakespeare-xl"), assignments=sets, quick=True, root="/nonexistent")
        job.check(cfgs)
