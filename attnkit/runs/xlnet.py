"""The XLNet pretraining job: ``attnkit train xlnet`` (Yang et al. 2019).

The text, the WordPiece vocabulary and the sequences are those of ``attnkit train mlm``
(:class:`~attnkit.runs.mlm.MLMJob`, from scratch, without a sentence-pair task); ``model`` gives the
sizes (``vocab_size``, ``d_model``, ``n_layers``, ``n_heads``, ``d_ff``, ``activation``, ``dropout``),
from which the :class:`~attnkit.models.xlnet.XLNetLM` is built; ``xlnet.k`` is the partial-prediction
constant K. The saved model is the ``XLNetLM``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.runs.base import Log, Prepared
from attnkit.runs.mlm import MLMJob


@dataclass(frozen=True, kw_only=True)
class XLNetObjectiveConfig(Config):
    """Partial prediction: the last ``1/k`` of each factorisation order is predicted (K = 6, section 3.1).

    ``memory``: each sequence is two segments, the second attending to the first one's cached content
    states (Transformer-XL's recurrence, section 2.3).
    """

    k: float = 6.0
    memory: bool = False

    def validate(self) -> None:
        check(self.k >= 1.0, "k", self.k, "must be >= 1 (1: predict every token)")


class XLNetJob(MLMJob):
    """``attnkit train xlnet``: permutation language modelling with two-stream attention, from scratch."""

    task = "xlnet"
    summary = "XLNet pretraining (permutation LM, two-stream attention) on text"

    def __init__(self) -> None:
        super().__init__()
        self.config_types = {**self.config_types, "xlnet": XLNetObjectiveConfig}

    def defaults(self) -> dict[str, Config]:
        return {**super().defaults(), "xlnet": XLNetObjectiveConfig()}

    def check(self, configs: dict[str, Config]) -> None:
        d = configs["data"]
        if d.model is not None:  # type: ignore[attr-defined]
            raise ConfigError("attnkit train xlnet trains from scratch; leave out --model (data.model)")
        if d.pair_task != "none":  # type: ignore[attr-defined]
            raise ConfigError(f"data.pair_task={d.pair_task!r}: XLNet has no sentence-pair task here; leave it at none")  # type: ignore[attr-defined]
        super().check(configs)

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.models.xlnet import XLNetConfig, XLNetLM
        from attnkit.training.xlnet import XLNetTask

        # the text, tokenizer and sequences of masked LM; its BERT is left unused, so its size is not reported
        base = super().prepare(configs, out, resume=resume, log=lambda line: None if line.startswith("model: ") else log(line))
        m, t, old = base.configs["model"], base.configs["train"], base.task
        task = XLNetTask(old.docs, old.train_ids, old.valid_ids, tokenizer=old.tok, max_seq_len=old.max_seq_len, batch_size=old.batch_size,
                         pair_task="none", masking=old.masking, short_seq_prob=old.short_seq_prob, max_eval_pairs=len(old.valid_pairs),
                         device=old.device, log=old.log, k=configs["xlnet"].k, memory=configs["xlnet"].memory)  # type: ignore[attr-defined]
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]
        model = XLNetLM(XLNetConfig(vocab_size=m.vocab_size, d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads,  # type: ignore[attr-defined]
                                    d_ff=m.ffn_dim, activation=m.activation, dropout=m.dropout, norm_eps=m.norm_eps,  # type: ignore[attr-defined]
                                    init_std=m.init_std, pad_id=m.pad_id, max_len=m.max_len))  # type: ignore[attr-defined]
        log(f"XLNet: {model.num_parameters() / 1e6:.2f}M parameters; the last 1/{configs['xlnet'].k:g} of each order predicted")  # type: ignore[attr-defined]
        return Prepared(model=model, task=task, configs=base.configs, tokenizer=base.tokenizer)


JOBS = {"xlnet": XLNetJob}
