"""The ELECTRA pretraining job: ``attnkit train electra`` (Clark et al. 2020).

The text, the WordPiece vocabulary and the packed full-sentence sequences are those of ``attnkit
train mlm`` (:class:`~attnkit.runs.mlm.MLMJob`, without a sentence-pair task); ``model`` is the
discriminator's encoder config, and ``electra`` sets the generator's width, the discriminator
loss weight and the sampling temperature. The masking chooses 15% of the tokens and puts [MASK]
at each. The saved ``OUT/model`` is the whole :class:`~attnkit.models.electra.ElectraPretraining`
(``attnkit finetune ... --model OUT/model`` fine-tunes its discriminator's encoder), and
``OUT/discriminator`` the discriminator alone with the tokenizer, which ``attnkit convert --to-hf
--family electra`` writes as a Hugging Face ``ElectraForPreTraining``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.objectives.electra import DISC_WEIGHT
from attnkit.runs.base import Log, Prepared
from attnkit.runs.mlm import MLMJob, scratch_train
from attnkit.training.loop import TrainResult, Trainer


@dataclass(frozen=True, kw_only=True)
class ElectraObjectiveConfig(Config):
    """ELECTRA's own settings: the generator's share of the discriminator's width (1/4 for ELECTRA-Small, section 3.2),
    lambda of eq. 2 (50) and the temperature the generator samples at (1)."""

    generator_fraction: float = 0.25
    disc_weight: float = DISC_WEIGHT
    temperature: float = 1.0

    def validate(self) -> None:
        check(0.0 < self.generator_fraction <= 1.0, "generator_fraction", self.generator_fraction, "must be in (0, 1]")
        check(self.disc_weight > 0, "disc_weight", self.disc_weight, "must be positive")
        check(self.temperature > 0, "temperature", self.temperature, "must be positive")


def electra_masking() -> Any:
    """15% of the tokens chosen, every chosen one replaced by [MASK] (section 2)."""
    from attnkit.objectives.mlm import MaskingConfig

    return MaskingConfig(select_prob=0.15, mask_prob=1.0, random_prob=0.0)


class ElectraJob(MLMJob):
    """``attnkit train electra``: a generator and a discriminator trained together from scratch; the best by held-out loss is saved."""

    task = "electra"
    summary = "ELECTRA pretraining (replaced-token detection) on text"

    def __init__(self) -> None:
        super().__init__()
        self.config_types = {**self.config_types, "electra": ElectraObjectiveConfig}

    def defaults(self) -> dict[str, Config]:
        from attnkit.models.bert import bert_preset

        return {"model": bert_preset("electra-small-discriminator"), "train": scratch_train(),
                "data": super().defaults()["data"], "masking": electra_masking(), "electra": ElectraObjectiveConfig()}

    def check(self, configs: dict[str, Config]) -> None:
        d = configs["data"]
        if not d.text:  # type: ignore[attr-defined]
            raise ConfigError("attnkit train electra needs --text FILE [FILE ...], or --recipe with --data-root")
        if d.model is not None:  # type: ignore[attr-defined]
            raise ConfigError("attnkit train electra trains a generator and a discriminator from scratch; leave out --model (data.model)")
        if d.pair_task != "none":  # type: ignore[attr-defined]
            raise ConfigError(f"data.pair_task={d.pair_task!r}: ELECTRA has no sentence-pair task; leave it at none")  # type: ignore[attr-defined]
        from attnkit.models.electra import ElectraPretrainingConfig

        ElectraPretrainingConfig(discriminator=configs["model"], generator_fraction=configs["electra"].generator_fraction)  # type: ignore[arg-type, attr-defined]
        super().check(configs)

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.models.electra import ElectraPretraining, ElectraPretrainingConfig
        from attnkit.training.electra import ElectraTask

        # the text, tokenizer and sequences of masked LM; its BERT is left unused, so its size is not reported
        base = super().prepare(configs, out, resume=resume, log=lambda line: None if line.startswith("model: ") else log(line))
        m, t, e = base.configs["model"], base.configs["train"], configs["electra"]
        old = base.task
        task = ElectraTask(old.docs, old.train_ids, old.valid_ids, tokenizer=old.tok, max_seq_len=old.max_seq_len, batch_size=old.batch_size,
                           pair_task="none", masking=old.masking, short_seq_prob=old.short_seq_prob,
                           max_eval_pairs=len(old.valid_pairs), device=old.device, log=old.log,
                           disc_weight=e.disc_weight, temperature=e.temperature)  # type: ignore[attr-defined]
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]
        model = ElectraPretraining(ElectraPretrainingConfig(discriminator=m, generator_fraction=e.generator_fraction))  # type: ignore[arg-type, attr-defined]
        model.init_replaced_prior(old.masking.select_prob)  # an untrained generator replaces almost every masked token
        g = model.config.generator
        log(f"ELECTRA: discriminator {model.discriminator.num_parameters() / 1e6:.2f}M parameters (d_model {m.d_model}), "  # type: ignore[attr-defined]
            f"generator d_model {g.d_model} with {g.n_heads} head(s); embeddings shared; discriminator loss x {e.disc_weight:g}")  # type: ignore[attr-defined]
        return Prepared(model=model, task=task, configs=base.configs, tokenizer=base.tokenizer)

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        import attnkit

        final = super().finish(prepared, trainer, result, out, log)
        model = attnkit.load(out / "model")
        model.discriminator.save_pretrained(out / "discriminator", tokenizer=prepared.tokenizer)
        log(f"discriminator saved to {out / 'discriminator'} (attnkit convert --to-hf --family electra exports it)")
        final["discriminator"] = str(out / "discriminator")
        return final


JOBS = {"electra": ElectraJob}
