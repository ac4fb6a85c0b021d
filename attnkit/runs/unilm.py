"""The UniLM pretraining job: ``attnkit train unilm`` (Dong et al. 2019).

The text, the vocabulary, the sequences and the masking are those of ``attnkit train mlm``
(:class:`~attnkit.runs.mlm.MLMJob`, without a sentence-pair task), from scratch or continued
from a BERT-family checkpoint (``--model``; UniLM itself starts from BERT-large, section 3);
``unilm`` weights the four self-attention masks (:mod:`attnkit.data.unilm`). The saved model is a
:class:`~attnkit.models.unilm.UnilmMLM`, whose encoder ``attnkit finetune`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.runs.base import Log, Prepared
from attnkit.runs.mlm import MLMJob


@dataclass(frozen=True, kw_only=True)
class UnilmConfig(Config):
    """The share of batches of each language model (UniLM, section 2.3: 1/3, 1/3, 1/6, 1/6); normalised, at least one positive."""

    bidirectional: float = 1 / 3
    seq2seq: float = 1 / 3
    left_to_right: float = 1 / 6
    right_to_left: float = 1 / 6

    def validate(self) -> None:
        for name in ("bidirectional", "seq2seq", "left_to_right", "right_to_left"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        total = self.bidirectional + self.seq2seq + self.left_to_right + self.right_to_left
        check(total > 0, "bidirectional", self.bidirectional, "the four weights must not all be 0")


class UnilmJob(MLMJob):
    """``attnkit train unilm``: masked LM under per-batch bidirectional, left-to-right, right-to-left and seq2seq masks."""

    task = "unilm"
    summary = "UniLM pretraining (masked LM under four self-attention masks) on text"

    def __init__(self) -> None:
        super().__init__()
        self.config_types = {**self.config_types, "unilm": UnilmConfig}

    def defaults(self) -> dict[str, Config]:
        return {**super().defaults(), "unilm": UnilmConfig()}

    def check(self, configs: dict[str, Config]) -> None:
        if configs["data"].pair_task != "none":  # type: ignore[attr-defined]
            raise ConfigError(f"data.pair_task={configs['data'].pair_task!r}: UniLM has no sentence-pair task; leave it at none")  # type: ignore[attr-defined]
        super().check(configs)

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.models.unilm import UnilmMLM
        from attnkit.training.unilm import UnilmTask

        base = super().prepare(configs, out, resume=resume, log=log)  # text, tokenizer, sequences, the (loaded) masked-LM model
        u, old = configs["unilm"], base.task
        mixture = {k: getattr(u, k) for k in ("bidirectional", "seq2seq", "left_to_right", "right_to_left")}
        task = UnilmTask(old.docs, old.train_ids, old.valid_ids, tokenizer=old.tok, max_seq_len=old.max_seq_len, batch_size=old.batch_size,
                         pair_task="none", masking=old.masking, short_seq_prob=old.short_seq_prob, max_eval_pairs=len(old.valid_pairs),
                         device=old.device, log=old.log, mixture=mixture)
        model = UnilmMLM(base.configs["model"])  # type: ignore[arg-type]
        model.load_state_dict(base.model.mlm.state_dict())
        log("UniLM masks per batch: " + ", ".join(f"{k} {v / sum(mixture.values()):.2f}" for k, v in mixture.items()))
        return Prepared(model=model, task=task, configs=base.configs, tokenizer=base.tokenizer)


JOBS = {"unilm": UnilmJob}
