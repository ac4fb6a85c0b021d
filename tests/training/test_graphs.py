"""Whole training steps as CUDA graphs (``train.execution.cuda_graphs``, :mod:`attnkit.training.graphs`).

On the CPU: the batch signature and buffer walk, the host-side lr that logging reads (against the
lr torch's ``LambdaLR`` sets), device-tensor lrs filled in place by the schedule, and the
rejected configurations. On the GPU: recorded steps against the same steps run eagerly, for
attnkit's Transformer through the Trainer (varying shapes, gradient accumulation, clipping, the
weight average, resuming) and for ``torch.nn.Transformer`` (a model we did not write) through
:class:`GraphedSteps` directly; dropout draws fresh masks at every replay.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import torch
from torch import nn

import attnkit
from attnkit.data.seq2seq import Seq2SeqBatch
from attnkit.data.synthetic import synthetic_task
from attnkit.errors import ConfigError
from attnkit.training.config import ExecutionConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig
from attnkit.training.graphs import map_tensors, signature, tensors
from attnkit.training.loop import Trainer
from attnkit.training.optim import base_lr, build_optimizer, device_lrs, scheduled_lr
from attnkit.training.schedules import build_scheduler
from attnkit.training.tasks import Seq2SeqTask

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def batch(b: int, ts: int, tt: int) -> Seq2SeqBatch:
    return Seq2SeqBatch(torch.randint(1, 9, (b, ts)), torch.randint(1, 9, (b, tt)), torch.randint(1, 9, (b, tt)))


# -- CPU --------------------------------------------------------------------------------------
def test_signature_follows_shapes_dtypes_and_values() -> None:
    a, b = batch(4, 5, 6), batch(4, 5, 6)
    assert signature(a) == signature(b)  # values of tensors do not matter
    assert signature(a) != signature(batch(4, 5, 7))
    assert signature([a]) != signature([a, b])
    assert signature({"x": torch.zeros(2), "k": 3}) != signature({"x": torch.zeros(2), "k": 4})  # numbers are baked in
    assert signature({"x": torch.zeros(2)}) != signature({"x": torch.zeros(2, dtype=torch.float64)})
    assert signature({"x": [1, 2]}) == signature({"x": [1, 2]})


def test_map_tensors_rebuilds_and_tensors_walks_in_the_same_order() -> None:
    a = batch(2, 3, 4)
    nested = {"pair": (a, torch.ones(1)), "n": 5, "rows": [torch.zeros(2)]}
    copy = map_tensors(nested, lambda t: t.clone())
    assert isinstance(copy["pair"][0], Seq2SeqBatch) and copy["n"] == 5
    originals, copies = tensors(nested), tensors(copy)
    assert len(originals) == 5
    for o, c in zip(originals, copies):
        assert torch.equal(o, c) and o.data_ptr() != c.data_ptr()


@pytest.mark.parametrize("kind,kw", [("noam", {"d_model": 32, "factor": 2.0}), ("linear", {}), ("cosine", {"min_ratio": 0.1}),
                                     ("constant", {})])
@pytest.mark.parametrize("layer_decay", [1.0, 0.7])
def test_scheduled_lr_is_the_lr_lambdalr_sets(kind: str, kw: dict, layer_decay: float) -> None:
    """The host-side lr the loop logs equals the lr torch's scheduler writes into the groups."""
    model = attnkit.BertModel(attnkit.models.bert.bert_preset("bert-test", n_layers=2))
    opt = build_optimizer(model, "adamw", 3e-4, layer_decay=layer_decay)
    sched = build_scheduler(opt, kind, warmup=3, total_steps=10, **kw)
    for _ in range(10):
        assert math.isclose(scheduled_lr(sched), base_lr(opt), rel_tol=1e-12)
        opt.step()
        sched.step()


def test_device_lrs_are_filled_in_place_by_the_schedule() -> None:
    model = nn.Linear(4, 4)
    opt = build_optimizer(model, "adam", 1e-3)
    sched = build_scheduler(opt, "noam", warmup=4, total_steps=10, d_model=16)
    device_lrs(opt)
    lr = opt.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float32 and lr.dim() == 0
    address = lr.data_ptr()
    for _ in range(3):
        expected = scheduled_lr(sched)
        assert math.isclose(float(opt.param_groups[0]["lr"]), expected, rel_tol=1e-6)
        sched.step()
    assert opt.param_groups[0]["lr"].data_ptr() == address


def test_cuda_graphs_configuration_errors(tmp_path) -> None:
    for mode in ("reduce-overhead", "max-autotune"):  # torch.compile's own graphs inside the recorded step: refused
        with pytest.raises(ConfigError, match=f"cuda_graphs=True is not allowed; excludes execution.compile_mode={mode}"):
            TrainConfig(execution=ExecutionConfig(cuda_graphs=True, compile=True, compile_mode=mode))
    for mode in ("default", "max-autotune-no-cudagraphs"):  # the compiled forward and backward inside the recorded step
        assert TrainConfig(execution=ExecutionConfig(cuda_graphs=True, compile=True, compile_mode=mode)).execution.cuda_graphs
    with pytest.raises(ConfigError, match="capturable"):
        build_optimizer(nn.Linear(2, 2), "adam", 1e-3, capturable=True)
    train, _, _, tok = synthetic_task("copy", n_train=16, n_valid=4, min_len=2, max_len=5)
    v = tok.get_vocab_size()
    model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v))
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        Trainer(model, Seq2SeqTask(train, batch_size=8), TrainConfig(steps=1, device="cpu", execution=ExecutionConfig(cuda_graphs=True)), tmp_path, progress=False)


# -- GPU --------------------------------------------------------------------------------------
def _train(tmp_path, name: str, steps: int, *, resume: bool = False, cuda_graphs: bool = False, compile: bool = False,
           **train: object) -> tuple[Trainer, list[float]]:
    train_set, _, _, tok = synthetic_task("copy", n_train=96, n_valid=8, min_len=2, max_len=9, seed=1)
    v = tok.get_vocab_size()
    torch.manual_seed(0)
    cfg = attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v, dropout=0.0)
    model = attnkit.Transformer(cfg)
    tc = TrainConfig(steps=steps, batch_size=8, device="cuda", log_every=1, save_every=4, **train, schedule=ScheduleConfig(warmup=4),
                     execution=ExecutionConfig(precision="fp32", cuda_graphs=cuda_graphs, compile=compile))
    trainer = Trainer(model, Seq2SeqTask(train_set, batch_size=8, device="cuda"), tc, tmp_path / name, progress=False)
    return trainer, trainer.fit(resume=resume).losses


@pytest.mark.gpu
@cuda
def test_trainer_graphed_steps_follow_eager_steps(tmp_path) -> None:
    """Twelve steps over batches of varying shapes (each shape eager once, then replayed), with
    gradient accumulation, clipping and the weight average: losses and weights as eager."""
    kw = {"grad_accum": 2, "optim": OptimConfig(clip_norm=0.5), "reg": RegularizationConfig(ema_decay=0.9)}
    eager, eager_losses = _train(tmp_path, "eager", 12, **kw)
    graphed, graphed_losses = _train(tmp_path, "graphed", 12, cuda_graphs=True, **kw)
    assert graphed.graphed is not None and graphed.graphed.graphed_calls > 0  # some steps were replays
    torch.testing.assert_close(torch.tensor(graphed_losses), torch.tensor(eager_losses), rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(eager.model.named_parameters(), graphed.model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
    for e, g in zip(eager.ema, graphed.ema):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)
    lrs = [json.loads(line)["lr"] for line in (tmp_path / "graphed" / "metrics.jsonl").read_text().splitlines() if "lr" in line]
    assert lrs == [json.loads(line)["lr"] for line in (tmp_path / "eager" / "metrics.jsonl").read_text().splitlines() if "lr" in line]


@pytest.mark.gpu
@cuda
def test_trainer_records_compiled_steps(tmp_path) -> None:
    """torch.compile's forward and backward inside the recorded step (compile_mode default): twelve steps over batches of
    varying shapes follow the eager steps (a compiled kernel rounds differently: a looser tolerance than graphs alone)."""
    kw = {"grad_accum": 2, "optim": OptimConfig(clip_norm=0.5)}
    _, eager_losses = _train(tmp_path, "eager", 12, **kw)
    both, both_losses = _train(tmp_path, "compiled-graphed", 12, cuda_graphs=True, compile=True, **kw)
    assert both.graphed is not None and both.graphed.graphed_calls > 0 and not both.compiled_graphs
    torch.testing.assert_close(torch.tensor(both_losses), torch.tensor(eager_losses), rtol=2e-3, atol=1e-4)


@pytest.mark.gpu
@cuda
def test_trainer_graphed_steps_resume(tmp_path) -> None:
    """8 graphed steps, then resumed to 12: the losses of the last 4 follow 12 straight graphed steps."""
    _, straight = _train(tmp_path, "straight", 12, cuda_graphs=True)
    _train(tmp_path, "split", 8, cuda_graphs=True)
    trainer, resumed = _train(tmp_path, "split", 12, resume=True, cuda_graphs=True)
    assert isinstance(trainer.optimizer.param_groups[0]["lr"], torch.Tensor) and trainer.optimizer.param_groups[0]["lr"].is_cuda
    torch.testing.assert_close(torch.tensor(resumed), torch.tensor(straight[8:]), rtol=1e-4, atol=1e-5)


class TorchSeq2Seq(nn.Module):
    """A small ``torch.nn.Transformer`` with a shared embedding and tied output layer."""

    def __init__(self, vocab: int = 16, d: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d, padding_idx=0)
        self.core = nn.Transformer(d, 4, 2, 2, 64, dropout, batch_first=True)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1], device=src.device)
        pad = src == 0
        h = self.core(self.embed(src), self.embed(tgt_in), tgt_mask=causal, tgt_is_causal=True, src_key_padding_mask=pad,
                      memory_key_padding_mask=pad)
        return self.out(h)


def _torch_steps(graphed: bool, batches: list[Seq2SeqBatch], dropout: float = 0.0, lr: float = 1e-3) -> tuple[nn.Module, list[torch.Tensor], Any]:
    """Adam steps of :class:`TorchSeq2Seq` on ``batches``, eagerly or through :class:`GraphedSteps`
    (``warmup=1``); returns the model, each step's loss and the runner."""
    from attnkit.training.graphs import GraphedSteps

    torch.manual_seed(0)
    model = TorchSeq2Seq(dropout=dropout).cuda().train()
    opt = build_optimizer(model, "adam", lr, capturable=graphed)
    if graphed:
        device_lrs(opt)

    def body(b: Seq2SeqBatch) -> tuple[torch.Tensor]:
        opt.zero_grad(set_to_none=not graphed)
        loss = nn.functional.cross_entropy(model(b.src, b.tgt_in).flatten(0, 1), b.tgt_out.flatten(), ignore_index=0)
        loss.backward()
        opt.step()
        return (loss.detach(),)

    run = GraphedSteps(body, warmup=1) if graphed else body
    return model, [run(b)[0].clone() for b in batches], run


def _cuda_batches() -> list[Seq2SeqBatch]:
    g = torch.Generator().manual_seed(3)
    shapes = [(4, 5, 6), (4, 5, 6), (3, 7, 4), (4, 5, 6), (3, 7, 4), (3, 7, 4), (4, 5, 6), (3, 7, 4)]
    out = []
    for b, ts, tt in shapes:
        src = torch.randint(1, 16, (b, ts), generator=g)
        src[0, -2:] = 0  # padding in the batch
        out.append(Seq2SeqBatch(src, torch.randint(1, 16, (b, tt), generator=g), torch.randint(0, 16, (b, tt), generator=g)).to("cuda"))
    return out


@pytest.mark.gpu
@cuda
def test_graphed_steps_of_torch_transformer_follow_eager() -> None:
    batches = _cuda_batches()
    eager, eager_losses, _ = _torch_steps(False, batches)
    graphed, graphed_losses, run = _torch_steps(True, batches)
    assert run.graphed_calls == len(batches) - 2 and len(run.recorded) == 2  # 2 shapes, each run eagerly once first
    torch.testing.assert_close(torch.stack(graphed_losses), torch.stack(eager_losses), rtol=1e-4, atol=1e-5)
    for p, q in zip(eager.parameters(), graphed.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@cuda
def test_replays_draw_fresh_dropout_masks() -> None:
    """lr 0 keeps the weights: replays of one batch differ with dropout (new masks each time) and
    agree without it."""
    same = [_cuda_batches()[0]] * 6
    for dropout, expect_equal in ((0.3, False), (0.0, True)):
        _, losses, run = _torch_steps(True, same, dropout=dropout, lr=0.0)
        assert run.graphed_calls == 5
        replayed = torch.stack(losses[1:])
        assert bool((replayed == replayed[0]).all()) == expect_equal, (dropout, replayed)
