"""The extractive question-answering job: ``attnkit finetune qa`` (SQuAD v1.1 files).

Devlin et al. 2019, section 4.2: a span head (start and end logits per token) on a pretrained
encoder. Contexts are cut into windows of ``max_len`` tokens starting ``doc_stride`` tokens
apart; an answer is the best-scoring span of at most ``max_answer_len`` tokens among the
``n_best`` start and end candidates of all windows of its question
(:func:`attnkit.training.qa.extract_answers`). Exact match and F1 are SQuAD's official
definitions. The length of the run is counted in epochs of training windows exactly as for
``classify`` and ``ner`` (:func:`attnkit.runs.finetune.epoch_schedule`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.io import atomic_write_text
from attnkit.runs.base import Job, Log, Prepared, model_dir
from attnkit.peft.method import PEFTConfig
from attnkit.runs.finetune import FinetuneSource, adapt, epoch_schedule, finetune_train
from attnkit.training.config import TrainConfig
from attnkit.training.loop import TrainResult, Trainer, pick_device


@dataclass(frozen=True, kw_only=True)
class QADataConfig(FinetuneSource):
    """What ``qa`` fine-tunes, on which questions, and how contexts become windows.

    ``model`` is an attnkit or Hugging Face BERT-family directory (or ``all-MiniLM-L6-v2``, the
    packaged copy); a model without a span head gets a fresh one. Questions come from ``train``
    and ``dev``, or from one file ``data`` whose last ``split_articles`` articles evaluate and
    the others train (every context stays on one side). ``max_len`` (capped at the model's
    positions) and ``doc_stride`` shape the windows; questions beyond ``max_question_len`` tokens
    are truncated. ``limit`` / ``eval_limit`` keep at most that many training / dev questions
    (0: all). ``epochs``, ``warmup_ratio`` and the three switches set the schedule as for
    fine-tuning classifiers (:func:`attnkit.runs.finetune.epoch_schedule`).
    """

    data: str = ""
    split_articles: int = 0
    max_len: int = 384
    doc_stride: int = 128
    max_question_len: int = 64
    n_best: int = 20
    max_answer_len: int = 30
    epochs: float = 3.0
    warmup_ratio: float = 0.1
    limit: int = 0

    def validate(self) -> None:
        super().validate()
        check(self.max_len >= 8, "max_len", self.max_len, "must be >= 8 (specials, question and context)")
        check(0 < self.doc_stride, "doc_stride", self.doc_stride, "must be positive")
        check(self.max_question_len >= 1, "max_question_len", self.max_question_len, "must be >= 1")
        check(self.n_best >= 1, "n_best", self.n_best, "must be >= 1")
        check(self.max_answer_len >= 1, "max_answer_len", self.max_answer_len, "must be >= 1")
        check(self.epochs > 0, "epochs", self.epochs, "must be positive")
        check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        check(self.split_articles >= 0, "split_articles", self.split_articles, "must be >= 0 (0: no split; give train and dev)")
        check(self.limit >= 0, "limit", self.limit, "must be >= 0 (0 keeps every question)")


def load_questions(d: QADataConfig) -> tuple[Any, Any]:
    """``(train, dev)`` :class:`~attnkit.data.squad.SquadData` from ``train``/``dev`` or ``data``/``split_articles``.

    Raises:
        ConfigError: neither or both ways given, or a split without its file.
    """
    from attnkit.data.squad import read_squad, split_articles

    if d.data:
        if d.train or d.dev:
            raise ConfigError("give either --data with --split-articles, or --train and --dev, not both")
        if not d.split_articles:
            raise ConfigError("--data needs --split-articles N (the number of articles to evaluate on)")
        train, dev = split_articles(d.data, d.split_articles)
    else:
        if not d.train or not d.dev:
            raise ConfigError("give --train and --dev (or --data FILE --split-articles N)")
        if d.split_articles:
            raise ConfigError("--split-articles goes with --data, not with --train/--dev")
        train, dev = read_squad(d.train), read_squad(d.dev)
    if d.limit:
        train.examples = train.examples[: d.limit]
    if d.eval_limit:
        dev.examples = dev.examples[: d.eval_limit]
    return train, dev


class QAJob(Job):
    """``attnkit finetune qa``: extractive QA on SQuAD v1.1 files; the best model by dev F1 is kept.

    After training the saved model answers the dev questions once more: its predictions go to
    ``OUT/predictions.json``, its exact match and F1 to ``OUT/eval.json``.
    """

    task = "qa"
    summary = "extractive question answering (SQuAD v1.1 JSON)"
    metrics = ("exact_match", "f1")

    def __init__(self) -> None:
        self.config_types = {"train": TrainConfig, "data": QADataConfig, "peft": PEFTConfig}

    def defaults(self) -> dict[str, Config]:
        # BERT's SQuAD v1.1 recipe (section 4.2): AdamW, lr 5e-5, batch 32, 3 epochs, linear decay after 10% warm-up
        return {"train": finetune_train("f1", log_every=10), "data": QADataConfig(), "peft": PEFTConfig()}

    def check(self, configs: dict[str, Config]) -> None:
        if not configs["data"].model:  # type: ignore[attr-defined]
            raise ConfigError("attnkit finetune qa needs --model DIR and its questions (--train/--dev or --data), or --recipe NAME")

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.data.squad import make_windows
        from attnkit.loading import load_model_and_tokenizer
        from attnkit.training.finetune import encoder_of
        from attnkit.training.qa import QATask, qa_model_from

        t: TrainConfig = configs["train"]  # type: ignore[assignment]
        d: QADataConfig = configs["data"]  # type: ignore[assignment]
        train_data, dev_data = load_questions(d)
        log(f"train: {train_data.report()}")
        log(f"dev: {dev_data.report()}")
        source, tok = load_model_and_tokenizer(model_dir(d.model), d.tokenizer or None)
        limit = encoder_of(source).config.max_len
        p: PEFTConfig = configs.get("peft", PEFTConfig())  # type: ignore[assignment]
        if p.method in ("prompt", "ptuning"):
            limit -= p.n_virtual  # the virtual tokens take the first positions
        max_len = min(d.max_len, limit)
        if max_len < d.max_len:
            log(f"max_len {d.max_len} is beyond the model's {limit} positions; windows of {max_len} tokens")
        shape = dict(max_len=max_len, doc_stride=d.doc_stride, max_question_len=d.max_question_len)
        train_w = make_windows(tok, train_data.examples, **shape)
        dev_w = make_windows(tok, dev_data.examples, **shape)
        kept = min(d.max_question_len, max_len - 4)  # make_windows leaves room for [CLS], [SEP], a context token and [SEP]
        cut = f"{kept} tokens" + (f" (max_len {max_len} - 4; data.max_question_len={d.max_question_len})" if kept < d.max_question_len else "")
        for name, w, q in (("train", train_w, train_data), ("dev", dev_w, dev_data)):
            unanswered = sum(x.start_label == 0 for x in w.windows)
            log(f"{name}: {len(w.windows)} windows for {len(q.examples)} questions ({unanswered} without the answer); "
                f"{w.truncated_questions} questions truncated to {cut}"
                + (f"; {w.unlabelled} answers cover no token (labelled [CLS])" if w.unlabelled else ""))
        if not resume:
            t = epoch_schedule(t, d, len(train_w.windows))
        torch.manual_seed(t.init_seed)  # a fresh span head's weights: fixed by train.init_seed, whatever train.seed
        model = qa_model_from(source)
        peft_count = adapt(model, p, model_dir(d.model), tok, log) if p.enabled else {}
        device = pick_device(t.device)
        task = QATask(train_w, dev_data.examples, dev_w, batch_size=t.batch_size, pad_id=tok.pad_id,
                      n_best=d.n_best, max_answer_len=d.max_answer_len, device=device)
        log(f"model: {model.num_parameters() / 1e6:.2f}M parameters; {t.steps} steps of {t.batch_size} windows on {device}")
        return Prepared(model=model, task=task, configs={**configs, "train": t}, tokenizer=tok,
                        state={"device": device, "train": train_data, "dev": dev_data, "train_w": train_w, "dev_w": dev_w,
                               "max_len": max_len, "peft": peft_count})

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        import attnkit
        from attnkit.metrics import squad_scores
        from attnkit.training.qa import extract_answers, window_logits

        d: QADataConfig = prepared.configs["data"]  # type: ignore[assignment]
        s = prepared.state
        train_data, dev_data, train_w, dev_w = s["train"], s["dev"], s["train_w"], s["dev_w"]
        best = attnkit.load(out / "model", map_location=s["device"]).eval()  # the saved model, scored once more
        logits = window_logits(best, dev_w, prepared.tokenizer.pad_id, batch_size=prepared.configs["train"].batch_size,  # type: ignore[attr-defined]
                               device=s["device"])
        predictions = extract_answers(dev_data.examples, dev_w, logits, n_best=d.n_best, max_answer_len=d.max_answer_len)
        scores = squad_scores(predictions, {e.id: e.answer_texts for e in dev_data.examples})
        atomic_write_text(out / "predictions.json", json.dumps(predictions, indent=1, ensure_ascii=False) + "\n")
        log(f"dev exact match {scores['exact_match']:.2f}, F1 {scores['f1']:.2f} ({len(dev_data.examples)} questions)")
        return {
            "exact_match": scores["exact_match"], "f1": scores["f1"], "best_step": result.best_step,
            "questions": len(dev_data.examples), "dev_articles": len(dev_data.articles), "train_questions": len(train_data.examples),
            "skipped_answers": {"train": train_data.bad_answers, "dev": dev_data.bad_answers},
            "skipped_questions": {"train": train_data.skipped_questions, "dev": dev_data.skipped_questions},
            "truncated_questions": {"train": train_w.truncated_questions, "dev": dev_w.truncated_questions},
            "windows": {"train": len(train_w.windows), "dev": len(dev_w.windows)},
            "max_len": s["max_len"], "doc_stride": d.doc_stride, "max_question_len": d.max_question_len,
            "n_best": d.n_best, "max_answer_len": d.max_answer_len, **s["peft"],
        }


JOBS = {"qa": QAJob}

__all__ = ["JOBS", "QADataConfig", "QAJob", "load_questions"]
