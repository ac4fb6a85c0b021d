"""Tasks with length-varying batches say so; the Trainer leaves cuDNN attention alone off CUDA."""

from __future__ import annotations

import pytest
import torch

from attnkit.training.finetune import ClassificationTask, TaggingTask
from attnkit.training.mlm import PretrainingTask
from attnkit.training.qa import QATask
from attnkit.training.tasks import Seq2SeqTask


def test_length_varying_tasks_declare_it() -> None:
    for task in (ClassificationTask, TaggingTask, QATask, PretrainingTask, Seq2SeqTask):
        assert task.varying_lengths is True, task


def test_cpu_training_keeps_the_cudnn_flag(tmp_path) -> None:
    import attnkit
    from attnkit.data.synthetic import synthetic_task
    from attnkit.training.config import ExecutionConfig, ScheduleConfig, TrainConfig
    from attnkit.training.loop import Trainer

    before = torch.backends.cuda.cudnn_sdp_enabled()
    train, _, _, tok = synthetic_task("copy", n_train=32, n_valid=4, min_len=2, max_len=5)
    v = tok.get_vocab_size()
    model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v))
    Trainer(model, Seq2SeqTask(train, batch_size=8), TrainConfig(steps=1, batch_size=8, device="cpu"), tmp_path, progress=False)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before


def test_compile_mode_needs_compile() -> None:
    from attnkit.errors import ConfigError
    from attnkit.training.config import ExecutionConfig, ScheduleConfig, TrainConfig

    with pytest.raises(ConfigError, match="compile_mode"):
        TrainConfig(execution=ExecutionConfig(compile_mode="reduce-overhead"))
    with pytest.raises(ConfigError, match="compile_mode"):
        TrainConfig(execution=ExecutionConfig(compile=True, compile_mode="fastest"))
    assert TrainConfig(execution=ExecutionConfig(compile=True, compile_mode="reduce-overhead")).execution.compile_mode == "reduce-overhead"


@pytest.mark.slow
def test_compiled_reduce_overhead_training_matches_eager_on_cpu(tmp_path) -> None:
    """execution.compile=True with a CUDA-graph mode (no graphs on the CPU, the same code path) over
    batches of varying lengths: the losses follow eager training."""
    import attnkit
    from attnkit.data.synthetic import synthetic_task
    from attnkit.training.config import ExecutionConfig, ScheduleConfig, TrainConfig
    from attnkit.training.loop import Trainer

    train, _, _, tok = synthetic_task("copy", n_train=64, n_valid=4, min_len=2, max_len=9)
    v = tok.get_vocab_size()
    losses = []
    # batches of 10 (source lengths 8, 7, 9, 9): no length equals the batch, so the one dynamic graph is traced once
    for compile_kw in ({}, {"compile": True, "compile_mode": "reduce-overhead"}):
        torch.manual_seed(0)
        model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v, n_encoder_layers=1,
                                                   n_decoder_layers=1))
        cfg = TrainConfig(steps=4, batch_size=10, device="cpu", log_every=1, schedule=ScheduleConfig(warmup=2),
                          execution=ExecutionConfig(precision="fp32", **compile_kw))
        trainer = Trainer(model, Seq2SeqTask(train, batch_size=10), cfg, tmp_path / str(len(losses)), progress=False)
        assert trainer.compiled_graphs == bool(compile_kw)
        losses.append(trainer.fit().losses)
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-4, atol=1e-4)
