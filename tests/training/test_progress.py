"""Progress a user can trust: tokens/s from input tokens with evaluation time left out, evaluation
lines, metrics.csv beside metrics.jsonl, TensorBoard event files, and what loss.png labels."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import attnkit
import attnkit.training.loop as loop
from attnkit.data.lm import LMTask
from attnkit.data.seq2seq import PairDataset
from attnkit.data.synthetic import synthetic_task
from attnkit.training import EvalConfig, ExecutionConfig, ScheduleConfig, Seq2SeqTask, TrainConfig, Trainer, list_checkpoints
from attnkit.training.config import RegularizationConfig


def _setup(task_class: type = Seq2SeqTask):
    train, vin, vout, tok = synthetic_task("reverse", n_train=96, n_valid=8, min_len=2, max_len=6, seed=3)
    valid = PairDataset([(tok.encode(a).ids, tok.encode(b).ids) for a, b in zip(vin, vout)])
    v = tok.get_vocab_size()
    torch.manual_seed(0)
    model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v, d_model=32, d_ff=64))
    return model, task_class(train, batch_size=16, valid=valid)


def _cfg(steps: int, **kw) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=16, device="cpu", schedule=ScheduleConfig(warmup=4),
                       execution=ExecutionConfig(precision="fp32"), **kw)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _non_pad(t: torch.Tensor) -> int:
    return sum(1 for row in t.tolist() for x in row if x != 0)


def test_tokens_are_the_inputs_of_each_window(tmp_path):
    """Seq2seq: source plus decoder-input tokens, counted without padding, not the loss's targets."""
    model, task = _setup()
    Trainer(model, task, _cfg(3, log_every=1), tmp_path, progress=False).fit()
    batches = list(task.batches(0, 0))[:3]  # the Trainer's first epoch, seed 0: the same order
    inputs = [_non_pad(b.src) + _non_pad(b.tgt_in) for b in batches]
    targets = [_non_pad(b.tgt_out) for b in batches]
    assert [r["tokens"] for r in _records(tmp_path)] == inputs
    assert inputs != targets  # the two counts differ here, so the check can fail


def test_a_task_without_input_tokens_counts_its_loss_targets(tmp_path):
    class TargetsOnly(Seq2SeqTask):
        input_tokens = None  # as a task that does not define it

    model, task = _setup(TargetsOnly)
    Trainer(model, task, _cfg(2, log_every=1), tmp_path, progress=False).fit()
    targets = [_non_pad(b.tgt_out) for b in list(task.batches(0, 0))[:2]]
    assert [r["tokens"] for r in _records(tmp_path)] == targets


class _Clock:
    """A perf_counter that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_tokens_per_second_leave_evaluation_out(tmp_path, monkeypatch):
    """Each micro-batch feeds 7 tokens and takes 1 s; each evaluation takes 100 s. A window of two
    steps is 14 tokens in 2 s of training, whatever the evaluations in it took."""
    clock = _Clock()
    monkeypatch.setattr(loop, "time", clock)

    class Timed(Seq2SeqTask):
        def input_tokens(self, batch):
            return 7

        def loss(self, model, batch, epsilon=None):
            clock.now += 1.0
            return super().loss(model, batch, epsilon)

        def evaluate(self, model):
            clock.now += 100.0
            return {"loss": 1.0}

    model, task = _setup(Timed)
    Trainer(model, task, _cfg(6, log_every=2, save_every=3, eval=EvalConfig(every=1)), tmp_path, progress=False).fit()
    logged = [r for r in _records(tmp_path) if "tokens" in r]
    assert [(r["step"], r["tokens"], r["tokens_per_s"]) for r in logged] == [(2, 14, 7.0), (4, 14, 7.0), (6, 14, 7.0)]


def test_input_tokens_of_the_lm_task():
    """LM: the context tokens of each (B, T + 1) window, B * T."""
    task = LMTask(torch.arange(200) % 7, torch.arange(50) % 7, context=8, batch_size=3)
    batch = next(task.batches(0, 0))
    assert batch.shape == (3, 9) and task.input_tokens(batch) == 3 * 8


def test_every_evaluation_is_printed(tmp_path, capsys):
    class Scored(Seq2SeqTask):
        def evaluate(self, model):
            return {"loss": 1.23456, "exact_match": 0.5, "signature": "nrefs:1"}

    model, task = _setup(Scored)
    lines: list[str] = []
    Trainer(model, task, _cfg(4, log_every=0, eval=EvalConfig(every=2)), tmp_path / "a", progress=False, write=lines.append).fit()
    assert lines == ["step 2: loss=1.235 exact_match=0.5 signature=nrefs:1", "step 4: loss=1.235 exact_match=0.5 signature=nrefs:1"]
    model, task = _setup(Scored)
    Trainer(model, task, _cfg(2, log_every=0, eval=EvalConfig(every=2)), tmp_path / "b", progress=False).fit()
    assert "step 2: loss=1.235 exact_match=0.5 signature=nrefs:1" in capsys.readouterr().out.splitlines()


def _csv_equals_jsonl(out: Path) -> list[dict]:
    records = _records(out)
    with open(out / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        header = reader.fieldnames
    assert header == list(dict.fromkeys(k for r in records for k in r))  # every key, in order of first appearance
    assert len(rows) == len(records)
    for row, rec in zip(rows, records):
        for k in header:
            if k not in rec:
                assert row[k] == "", (k, row)
            elif isinstance(rec[k], str):
                assert row[k] == rec[k]
            else:
                assert float(row[k]) == rec[k], (k, row[k], rec[k])  # exact: Python writes floats round-trip
    return records


def test_csv_holds_the_jsonl_records_across_resume(tmp_path):
    """Train and eval records (new columns appear at the first evaluation); a resume from an older
    checkpoint drops the replayed records from both files."""
    model, task = _setup()
    cfg = _cfg(6, log_every=1, save_every=2, eval=EvalConfig(every=3))
    Trainer(model, task, cfg, tmp_path, progress=False).fit()
    assert len(_csv_equals_jsonl(tmp_path)) == 6 + 2
    for newer in list_checkpoints(tmp_path)[-2:]:  # keep step 2's checkpoint: resume replays 3..6
        shutil.rmtree(newer)
    model, task = _setup()
    Trainer(model, task, cfg, tmp_path, progress=False).fit(resume=True)
    records = _csv_equals_jsonl(tmp_path)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records if "eval/loss" in r] == [3, 6]


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, task = _setup()
    Trainer(model, task, _cfg(3, log_every=1, tensorboard=True), tmp_path, progress=False).fit()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars("loss")]
    assert logged == [(r["step"], pytest.approx(r["loss"])) for r in _records(tmp_path)]


def test_tensorboard_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it raises ImportError
    model, task = _setup()
    lines: list[str] = []
    Trainer(model, task, _cfg(1, tensorboard=True), tmp_path, progress=False, write=lines.append).fit()
    assert len(lines) == 1 and "tensorboard package is not installed" in lines[0]
    assert not (tmp_path / "tensorboard").exists() and (tmp_path / "metrics.jsonl").exists()


def _plot(tmp_path: Path, monkeypatch, records: list[dict], **kw) -> SimpleNamespace:
    """Run plot_losses on ``records``; return what the figure shows."""
    matplotlib = pytest.importorskip("matplotlib")
    figures = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, *a, **k: figures.append(self))
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loop.plot_losses(path, tmp_path / "loss.png", **kw)
    (fig,) = figures
    return SimpleNamespace(labels=fig.axes[0].get_legend_handles_labels()[1], ylabels=[a.get_ylabel() for a in fig.axes],
                           lines=[[tuple(map(list, line.get_data())) for line in a.get_lines()] for a in fig.axes])


RECORDS = [{"step": 1, "loss": 3.0, "lr": 1e-4}, {"step": 2, "loss": 2.0, "lr": 2e-4},
           {"step": 2, "eval/loss": 2.5, "eval/accuracy": 0.75}]


def test_loss_png_names_label_smoothing_only_when_used(tmp_path, monkeypatch):
    smoothed = _plot(tmp_path, monkeypatch, RECORDS, label_smoothing=0.1)
    assert smoothed.labels == ["train (label-smoothed, eps=0.1)", "validation (no smoothing)"]
    plain = _plot(tmp_path, monkeypatch, RECORDS, label_smoothing=0.0)
    assert plain.labels == ["train", "validation"]


def test_loss_png_adds_the_learning_rate_and_the_dev_metric(tmp_path, monkeypatch):
    fig = _plot(tmp_path, monkeypatch, RECORDS, metric="accuracy")
    assert fig.ylabels == ["cross-entropy per token", "learning rate", "validation accuracy"]
    assert fig.lines[1] == [([1, 2], [1e-4, 2e-4])]
    assert fig.lines[2] == [([2], [0.75])]
    assert _plot(tmp_path, monkeypatch, RECORDS, metric="loss").ylabels == ["cross-entropy per token", "learning rate"]


def test_trainer_plots_with_its_config(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(loop, "plot_losses", lambda metrics, png, **kw: seen.update(kw))
    model, task = _setup()
    cfg = _cfg(1, reg=RegularizationConfig(label_smoothing=0.0), eval=EvalConfig(metric="exact_match", mode="max"))
    Trainer(model, task, cfg, tmp_path, progress=False).fit()
    assert seen == {"label_smoothing": 0.0, "metric": "exact_match"}


ROWS = [[5, 6, 7], [8], [9, 10, 11, 12, 13]]  # 9 real tokens in a (3, 5) padded batch


@pytest.mark.parametrize("owner", ["attnkit.training.finetune:_FinetuneTask", "attnkit.training.qa:QATask",
                                   "attnkit.training.mlm:PretrainingTask", "attnkit.training.listops:ListOpsTask"])
def test_input_tokens_of_padded_encoder_batches(owner: str):
    """Classification, tagging, QA, MLM, ListOps: the real tokens of a padded batch, not its size nor its targets."""
    import importlib

    from attnkit.data.batching import pad

    module, name = owner.split(":")
    task_class = getattr(importlib.import_module(module), name)
    ids, mask = pad([torch.tensor(r) for r in ROWS], 0, return_mask=True)
    batch = SimpleNamespace(ids=ids, attention_mask=mask.long())
    assert int(task_class.input_tokens(None, batch)) == sum(len(r) for r in ROWS) == 9
    if name == "ListOpsTask":  # no mask: no row is padded
        assert task_class.input_tokens(None, SimpleNamespace(ids=ids, attention_mask=None)) == ids.numel()
