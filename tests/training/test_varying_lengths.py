"""Tasks with length-varying batches say so; the Trainer leaves cuDNN attention alone off CUDA."""

from __future__ import annotations

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
    from attnkit.training.config import TrainConfig
    from attnkit.training.loop import Trainer

    before = torch.backends.cuda.cudnn_sdp_enabled()
    train, _, _, tok = synthetic_task("copy", n_train=32, n_valid=4, min_len=2, max_len=5)
    v = tok.get_vocab_size()
    model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v))
    Trainer(model, Seq2SeqTask(train, batch_size=8), TrainConfig(steps=1, batch_size=8, device="cpu"), tmp_path, progress=False)
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
