"""The dialogue job: ``attnkit train dialogue``, a DialoGPT-style model (Zhang et al. 2020).

The turns are read (:func:`attnkit.data.dialogue.read_dialogues`), a tokenizer is learned from
their text with the dialogue tokens added, each dialogue is cut into windows of whole turns that
fit ``model.context`` and a GPT learns the responses of each window
(:class:`attnkit.training.dialogue.DialogueTask`); the best model by validation loss is saved
with its tokenizer, ready for ``attnkit chat --model OUT/model``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attnkit.config import Config
from attnkit.errors import ConfigError, DataError
from attnkit.models.base import check_size
from attnkit.runs.base import Job, Log, Prepared
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig
from attnkit.training.loop import pick_device


class DialogueJob(Job):
    """``attnkit train dialogue``: a GPT on multi-turn dialogues, loss on the responses."""

    task = "dialogue"
    summary = "DialoGPT-style dialogue model (GPT over the history, loss on responses)"
    metrics = ("loss",)

    def __init__(self) -> None:
        from attnkit.models.gpt import GPTConfig
        from attnkit.training.dialogue import DialogueDataConfig

        self.config_types = {"model": GPTConfig, "train": TrainConfig, "data": DialogueDataConfig}

    def defaults(self) -> dict[str, Config]:
        from attnkit.models.gpt import gpt_preset
        from attnkit.training.dialogue import DialogueDataConfig

        return {
            "model": gpt_preset("char-shakespeare"),
            "train": TrainConfig(
                steps=2000, batch_size=32, log_every=50,
                optim=OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, clip_norm=1.0),
                schedule=ScheduleConfig(kind="cosine", warmup=100, min_lr_ratio=0.1),
                eval=EvalConfig(every=250), reg=RegularizationConfig(label_smoothing=0.0),
            ),
            "data": DialogueDataConfig(),
        }

    def check(self, configs: dict[str, Config]) -> None:
        if not configs["data"].text:  # type: ignore[attr-defined]
            raise ConfigError("attnkit train dialogue needs --text FILE (dialogues), or --recipe NAME --data-root DIR")
        if configs["model"].context < 8:  # type: ignore[attr-defined]
            raise ConfigError(f"model.context={configs['model'].context} is too short for a turn and a reply; use >= 8")  # type: ignore[attr-defined]

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.data.dialogue import DialogueTokens, make_example, read_dialogues, windows
        from attnkit.data.text import encode, read_text
        from attnkit.data.tokenizer import PAD_ID, load_tokenizer
        from attnkit.models.gpt import GPT
        from attnkit.training.dialogue import DialogueTask, dialogue_tokenizer

        t, d = configs["train"], configs["data"]
        dialogues = read_dialogues(read_text(d.text), d.format)  # type: ignore[attr-defined]
        if d.max_turns is not None:  # type: ignore[attr-defined]
            kept, left = [], d.max_turns  # type: ignore[attr-defined]
            for dia in dialogues:
                if left <= 0:
                    break
                kept.append(dia[:left])
                left -= len(kept[-1])
            dialogues = kept
        texts = [turn.render() for dia in dialogues for turn in dia]
        if resume:
            tok = load_tokenizer(out / "tokenizer.json")
        else:
            tok = dialogue_tokenizer(texts, d.tokenizer, d.vocab_size)  # type: ignore[attr-defined]
            out.mkdir(parents=True, exist_ok=True)
            tok.save(str(out / "tokenizer.json"))
        special = DialogueTokens.of(tok)
        m = configs["model"].replace(vocab_size=tok.get_vocab_size())  # type: ignore[attr-defined]
        examples = [make_example(w, special) for dia in dialogues
                    for w in windows([encode(tok, turn.render(), what="dialogue") for turn in dia], m.context)]
        if len(examples) < 2:
            raise DataError(f"{d.text}: {len(examples)} training example(s) of two turns or more; a dialogue model needs at least 2")  # type: ignore[attr-defined]
        n_valid = max(1, int(len(examples) * d.valid_fraction))  # type: ignore[attr-defined]
        train, valid = examples[:-n_valid], examples[-n_valid:]
        device = pick_device(t.device)  # type: ignore[attr-defined]
        check_size(GPT, m, device, copies=4)
        task = DialogueTask(train, valid, batch_size=t.batch_size, pad_id=PAD_ID, device=device)  # type: ignore[attr-defined]
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]
        model = GPT(m)
        log(f"{sum(len(x) for x in dialogues):,} turns in {len(dialogues):,} dialogue(s): {len(train):,} training and "
            f"{len(valid):,} validation windows of at most {m.context} tokens; vocabulary {tok.get_vocab_size()} ({d.tokenizer}); "  # type: ignore[attr-defined]
            f"{model.num_parameters() / 1e6:.2f}M parameters on {device}")
        return Prepared(model=model, task=task, configs={**configs, "model": m}, tokenizer=tok)


JOBS = {"dialogue": DialogueJob}
