"""The training loop: resume equivalence, atomic checkpoints, early stopping, logs."""

from __future__ import annotations

import json

import pytest
import torch

import attnkit
from attnkit.data.synthetic import synthetic_task
from attnkit.training import EvalConfig, ExecutionConfig, OptimConfig, ScheduleConfig, Seq2SeqTask, TrainConfig, Trainer, latest_checkpoint, list_checkpoints


def _setup(dropout: float = 0.1):
    train, vin, vout, tok = synthetic_task("reverse", n_train=96, n_valid=8, min_len=2, max_len=6, seed=3)
    v = tok.get_vocab_size()
    torch.manual_seed(0)
    model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v, dropout=dropout, d_model=32, d_ff=64))
    task = Seq2SeqTask(train, batch_size=16, label_smoothing=0.1)
    return model, task, tok


def _cfg(steps: int, **kw) -> TrainConfig:
    # 96 pairs / 16 = 6 batches an epoch, so 8 steps cross an epoch boundary.
    return TrainConfig(steps=steps, batch_size=16, log_every=1, save_every=4, device="cpu", **kw, schedule=ScheduleConfig(warmup=4), optim=OptimConfig(lr=1.0), execution=ExecutionConfig(precision="fp32"))


def test_resume_reproduces_straight_run(tmp_path):
    """2N steps straight == N steps, a fresh process-like restart with resume, N more (dropout on, grad accumulation on)."""
    n = 5
    model, task, tok = _setup()
    straight = Trainer(model, task, _cfg(2 * n, grad_accum=2), tmp_path / "a", progress=False).fit().losses

    model, task, tok = _setup()
    first = Trainer(model, task, _cfg(n, grad_accum=2), tmp_path / "b", progress=False).fit().losses
    torch.manual_seed(12345)  # a new process would start with other RNG state: resume must restore it
    model, task, tok = _setup()
    second = Trainer(model, task, _cfg(2 * n, grad_accum=2), tmp_path / "b", progress=False).fit(resume=True).losses
    assert first + second == straight  # bit-identical on CPU
    records = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 2 * n + 1))


def test_checkpoints_are_complete_and_pruned(tmp_path):
    model, task, tok = _setup()
    Trainer(model, task, _cfg(12, keep_checkpoints=2), tmp_path, tokenizer=tok, progress=False).fit()
    ckpts = list_checkpoints(tmp_path)
    assert [p.name for p in ckpts] == ["step-00000008", "step-00000012"]
    latest = latest_checkpoint(tmp_path)
    assert latest == ckpts[-1]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "trainer_state.pt"):
        assert (latest / f).is_file()
    # no temporary leftovers
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    reloaded = attnkit.load(latest)
    for (k, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a.cpu(), b), k


def test_interrupted_write_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    """A crash while writing a checkpoint leaves `latest` pointing at the previous complete one."""
    model, task, tok = _setup()
    Trainer(model, task, _cfg(4), tmp_path, progress=False).fit()
    good = latest_checkpoint(tmp_path)
    from attnkit.models import base

    def boom(*a, **k):
        raise KeyboardInterrupt  # the process dies mid-write

    monkeypatch.setattr(base, "save_file", boom)
    model, task, tok = _setup()
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, task, _cfg(8), tmp_path, progress=False).fit(resume=True)
    assert latest_checkpoint(tmp_path) == good
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    monkeypatch.undo()
    model, task, tok = _setup()
    result = Trainer(model, task, _cfg(8), tmp_path, progress=False).fit(resume=True)
    assert result.step == 8


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    model, task, tok = _setup()
    with pytest.raises(attnkit.CheckpointError, match="no checkpoint"):
        Trainer(model, task, _cfg(4), tmp_path, progress=False).fit(resume=True)


def test_training_learns_and_early_stops(tmp_path):
    train, vin, vout, tok = synthetic_task("copy", n_train=512, n_valid=16, min_len=2, max_len=3, seed=1)
    v = tok.get_vocab_size()
    torch.manual_seed(0)
    model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v))
    from attnkit.data.seq2seq import PairDataset

    valid = PairDataset([(tok.encode(a).ids, tok.encode(b).ids) for a, b in zip(vin, vout)])
    task = Seq2SeqTask(train, batch_size=32, valid=valid, heldout=(vin, vout), tokenizer=tok)
    cfg = TrainConfig(steps=400, batch_size=32, device="cpu", log_every=10, schedule=ScheduleConfig(kind="cosine", warmup=30), optim=OptimConfig(lr=3e-3), eval=EvalConfig(every=25, metric="exact_match", mode="max", stop_at=0.9), execution=ExecutionConfig(precision="fp32"))
    result = Trainer(model, task, cfg, tmp_path, tokenizer=tok, progress=False).fit()
    assert result.losses[-1] < result.losses[0] / 2
    assert result.stopped_early and result.best >= 0.9 and result.step < 400
    assert (tmp_path / "model" / "model.safetensors").is_file()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_gradient_accumulation_equals_big_batch(tmp_path):
    """grad_accum=2 with batch 8 takes the same first step as batch 16 (token-weighted mean).

    Adam with eps=1e-3: the key-projection bias has a mathematically zero gradient, and with
    the paper's eps=1e-9 Adam's first step would blow its rounding noise up to a full step.
    """
    torch.manual_seed(0)
    model_a, task_a, _ = _setup(dropout=0.0)
    task_a.batch_size = 16
    model_b, task_b, _ = _setup(dropout=0.0)
    task_b.batch_size = 8
    # the same 16 examples: batch order depends on the permutation only, so an 8-batch pair covers the same rows
    ra = Trainer(model_a, task_a, TrainConfig(steps=1, batch_size=16, device="cpu", log_every=1, schedule=ScheduleConfig(warmup=1), optim=OptimConfig(eps=1e-3), execution=ExecutionConfig(precision="fp32")), tmp_path / "a", progress=False).fit()
    rb = Trainer(model_b, task_b, TrainConfig(steps=1, batch_size=8, grad_accum=2, device="cpu", log_every=1, schedule=ScheduleConfig(warmup=1), optim=OptimConfig(eps=1e-3), execution=ExecutionConfig(precision="fp32")), tmp_path / "b", progress=False).fit()
    assert ra.losses[0] == pytest.approx(rb.losses[0], rel=1e-5)
    for (k, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=k)
