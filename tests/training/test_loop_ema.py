"""The weight average (``ema_decay``): evaluated and saved, restored on resume, raw weights kept for training."""

from __future__ import annotations

import torch

import attnkit
from attnkit.data.synthetic import synthetic_task
from attnkit.training import (
    EvalConfig, ExecutionConfig, OptimConfig, RegularizationConfig, ScheduleConfig, Seq2SeqTask, TrainConfig, Trainer,
)


def _setup():
    train, _, _, tok = synthetic_task("reverse", n_train=96, n_valid=8, min_len=2, max_len=6, seed=3)
    v = tok.get_vocab_size()
    torch.manual_seed(0)
    model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v, dropout=0.1, d_model=32, d_ff=64))
    return model, Seq2SeqTask(train, batch_size=16, label_smoothing=0.1)


def _cfg(steps: int, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=16, log_every=1, save_every=3, device="cpu", **kw, schedule=ScheduleConfig(warmup=4), optim=OptimConfig(lr=1.0), execution=ExecutionConfig(precision="fp32"), reg=RegularizationConfig(ema_decay=0.8))


class _Recorder(Seq2SeqTask):
    def evaluate(self, model):  # the weights the trainer evaluates
        self.seen = [p.detach().clone() for p in model.parameters()]
        return {"loss": float(sum(p.sum() for p in self.seen))}


def test_evaluates_and_saves_the_average_and_trains_on_raw_weights(tmp_path):
    model, task = _setup()
    task.__class__ = _Recorder
    trainer = Trainer(model, task, _cfg(6, eval=EvalConfig(every=6)), tmp_path, progress=False)
    trainer.fit()
    raw = [p.detach() for p in model.parameters()]
    for seen, avg, r in zip(task.seen, trainer.ema, raw):
        assert torch.equal(seen, avg)
    assert any(not torch.equal(a, r) for a, r in zip(trainer.ema, raw))  # the model keeps its raw weights
    saved = attnkit.load(tmp_path / "model")
    for a, b in zip(trainer.ema, saved.parameters()):
        assert torch.equal(a, b)


def test_resume_restores_the_average(tmp_path):
    model, task = _setup()
    straight = Trainer(model, task, _cfg(6), tmp_path / "a", progress=False)
    straight.fit()
    model, task = _setup()
    Trainer(model, task, _cfg(3), tmp_path / "b", progress=False).fit()
    model, task = _setup()
    resumed = Trainer(model, task, _cfg(6), tmp_path / "b", progress=False)
    resumed.fit(resume=True)
    for a, b in zip(straight.ema, resumed.ema):
        assert torch.equal(a, b)


class _PrecisionProbe(Seq2SeqTask):
    def evaluate(self, model):  # the dtype of a product inside the evaluation
        self.dtype = (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        return {"loss": 1.0}


def test_eval_precision(tmp_path):
    """bf16 training evaluates under autocast by default; eval_precision=fp32 evaluates without it."""
    for eval_precision, dtype in (("train", torch.bfloat16), ("fp32", torch.float32)):
        model, task = _setup()
        task.__class__ = _PrecisionProbe
        cfg = TrainConfig(steps=2, batch_size=16, log_every=1, device="cpu", schedule=ScheduleConfig(warmup=1), eval=EvalConfig(every=2, precision=eval_precision), execution=ExecutionConfig(precision="bf16"))
        Trainer(model, task, cfg, tmp_path / eval_precision, progress=False).fit()
        assert task.dtype == dtype, eval_precision
