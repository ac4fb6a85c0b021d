"""The MLM reading-comprehension job: ``attnkit finetune mlm-qa`` (SQuAD v1.1 files).

A masked LM answers ``[CLS] passage [SEP] question [SEP] [MASK] x k`` in one forward pass
(:mod:`attnkit.training.mlm_qa`): trained with the masked-LM loss at the answer's tokens and the
``[SEP]`` that ends it, read off as the passage span most probable under the ``k`` per-position
distributions (:func:`attnkit.training.mlm_qa.passage_spans`), or with ``data.read_off=free`` as
the most probable tokens wherever they come from (:func:`attnkit.training.mlm_qa.best_answers`).
Questions come from ``--train`` / ``--dev`` or one file split by article, exactly as for extractive QA
(:func:`attnkit.runs.qa.load_questions`); exact match and F1 are SQuAD's. The length of the run
is counted in epochs of training questions (:func:`attnkit.runs.finetune.epoch_schedule`).
After training the saved model answers the dev questions once more: the answers go to
``OUT/predictions.json``, the scores and the answers per second to ``OUT/eval.json``. A model
from ``attnkit train mlm`` on this run's SQuAD file is refused unless that stage left out the
articles this run evaluates on (:func:`check_no_leak`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.io import atomic_write_text
from attnkit.runs.base import Job, Log, Prepared, model_dir
from attnkit.runs.finetune import FinetuneSource, epoch_schedule, finetune_train
from attnkit.training.config import TrainConfig
from attnkit.training.loop import TrainResult, Trainer, pick_device


@dataclass(frozen=True, kw_only=True)
class MLMQADataConfig(FinetuneSource):
    """What ``mlm-qa`` trains on and how questions become rows.

    ``model`` is a BERT-family masked LM (a ``BertForMaskedLM`` directory or the model of
    ``attnkit train mlm``). Questions come from ``train`` and ``dev``, or from ``data`` whose last
    ``split_articles`` articles evaluate. ``answer_len`` is k, the number of [MASK] positions;
    ``max_len`` (capped at the model's positions) bounds the row, the passage taking what the
    question (at most ``max_question_len`` tokens) and the masks leave. ``limit`` / ``eval_limit``
    keep that many training / dev questions (0: all). ``read_off`` is the rule that reads the answer off
    the ``k`` distributions: ``passage``, the best span of the passage (its tokens, then ``[SEP]``;
    needs ``answer_len >= 2``), or ``free``, the best token at each position up to the best end
    (:mod:`attnkit.training.mlm_qa`).
    """

    data: str = ""
    split_articles: int = 0
    answer_len: int = 16
    max_len: int = 384
    max_question_len: int = 64
    epochs: float = 3.0
    warmup_ratio: float = 0.1
    limit: int = 0
    eval_batch_size: int = 64
    read_off: Literal["passage", "free"] = "passage"

    def validate(self) -> None:
        super().validate()
        check(self.answer_len >= 1, "answer_len", self.answer_len, "must be >= 1")
        check(self.max_len >= 8, "max_len", self.max_len, "must be >= 8")
        check(self.max_question_len >= 1, "max_question_len", self.max_question_len, "must be >= 1")
        check(self.epochs > 0, "epochs", self.epochs, "must be positive")
        check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        check(self.split_articles >= 0, "split_articles", self.split_articles, "must be >= 0")
        check(self.limit >= 0, "limit", self.limit, "must be >= 0")
        check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "must be >= 1")
        check(self.read_off == "free" or self.answer_len >= 2, "answer_len", self.answer_len,
              "must be >= 2 with read_off='passage' (the answer's tokens, then [SEP]); or set data.read_off=free")


class MLMQAJob(Job):
    task = "mlm-qa"
    summary = "reading comprehension with a masked LM: the answer's k tokens predicted in one pass (SQuAD v1.1 JSON)"
    config_types = {"train": TrainConfig, "data": MLMQADataConfig}
    metrics = ("loss", "exact_match", "f1")

    def defaults(self) -> dict[str, Config]:
        return {"train": finetune_train("f1", log_every=10), "data": MLMQADataConfig()}

    def check(self, configs: dict[str, Config]) -> None:
        if not configs["data"].model:  # type: ignore[attr-defined]
            raise ConfigError("attnkit finetune mlm-qa needs --model DIR and its questions (--train/--dev or --data), or --recipe NAME")

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.loading import load_model_and_tokenizer
        from attnkit.runs.qa import load_questions
        from attnkit.training.finetune import encoder_of
        from attnkit.training.mlm_qa import MLMQATask, encode_mlm_qa

        t: TrainConfig = configs["train"]  # type: ignore[assignment]
        d: MLMQADataConfig = configs["data"]  # type: ignore[assignment]
        train_q, dev_q = load_questions(d)  # type: ignore[arg-type]
        check_no_leak(d, model_dir(d.model))
        source, tok = load_model_and_tokenizer(model_dir(d.model), d.tokenizer or None)
        model = masked_lm(source, log)
        if tok.mask_id is None:
            raise ConfigError("the tokenizer has no [MASK] token; MLM reading comprehension needs one")
        max_len = min(d.max_len, encoder_of(model).config.max_len)
        shape = dict(k=d.answer_len, max_len=max_len, max_question_len=d.max_question_len)
        try:
            train_rows = encode_mlm_qa(tok, train_q.examples, train=True, **shape)
            dev_rows = encode_mlm_qa(tok, dev_q.examples, **shape)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        for name, r, q in (("train", train_rows, train_q), ("dev", dev_rows, dev_q)):
            log(f"{name}: {len(q.examples)} questions; {r.truncated_passages} passages cut to fit {max_len} tokens; "
                f"{r.cut_answers} answers longer than k={d.answer_len} tokens cut")
        if not resume:
            t = epoch_schedule(t, d, len(train_rows))
        device = pick_device(t.device)
        task = MLMQATask(train_rows, dev_rows, dev_q.examples, tok, k=d.answer_len, batch_size=t.batch_size,
                         eval_batch_size=d.eval_batch_size, device=device, read_off=d.read_off)
        return Prepared(model=model, task=task, configs={**configs, "train": t}, tokenizer=tok,
                        state={"device": device, "dev": dev_q, "dev_rows": dev_rows, "train_q": train_q, "train_rows": train_rows})

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        import attnkit
        from attnkit.metrics import squad_scores
        from attnkit.training.mlm_qa import predict_answers

        d: MLMQADataConfig = prepared.configs["data"]  # type: ignore[assignment]
        s = prepared.state
        best = attnkit.load(out / "model", map_location=s["device"]).eval()
        start = time.perf_counter()
        _, answers = predict_answers(best, s["dev_rows"], prepared.tokenizer, k=d.answer_len, batch_size=d.eval_batch_size,
                                     device=s["device"], read_off=d.read_off)
        if s["device"].type == "cuda":
            torch.cuda.synchronize(s["device"])
        seconds = time.perf_counter() - start
        examples = s["dev"].examples
        predictions = {e.id: a for e, a in zip(examples, answers)}
        scores = squad_scores(predictions, {e.id: e.answer_texts for e in examples})
        atomic_write_text(out / "predictions.json", json.dumps(predictions, indent=1, ensure_ascii=False) + "\n")
        log(f"dev exact match {scores['exact_match']:.2f}, F1 {scores['f1']:.2f} ({len(examples)} questions, "
            f"{len(examples) / max(seconds, 1e-9):.1f} answers/s)")
        return {"exact_match": scores["exact_match"], "f1": scores["f1"], "best_step": result.best_step, "questions": len(examples),
                "answers_per_s": len(examples) / max(seconds, 1e-9), "answer_len": d.answer_len, "read_off": d.read_off,
                "cut_answers": {"train": s["train_rows"].cut_answers, "dev": s["dev_rows"].cut_answers},
                "truncated_passages": {"train": s["train_rows"].truncated_passages, "dev": s["dev_rows"].truncated_passages}}


def check_no_leak(d: MLMQADataConfig, model: Path) -> None:
    """Refuse a model whose masked-LM stage read the passages this run evaluates on.

    ``model`` trained by ``attnkit train mlm`` (its run's ``run_config.json`` one directory up)
    on a SQuAD ``.json`` file that is this run's ``data`` must have left out at least its last
    ``split_articles`` articles (``data.squad_heldout_articles``); one that read this run's
    ``dev`` file read every evaluation passage.

    Raises:
        ConfigError: the stage read evaluation articles.
    """
    from attnkit.runs.path import RUN_CONFIG

    saved = Path(model).parent / RUN_CONFIG
    if not saved.is_file():
        return
    try:
        stage = json.loads(saved.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return
    if not isinstance(stage, dict) or stage.get("task") != "mlm":
        return
    sd = stage.get("data", {})
    read = {Path(t).resolve() for t in sd.get("text", ()) if isinstance(t, str) and t.endswith(".json")}
    held = int(sd.get("squad_heldout_articles", 0) or 0)
    if d.data and Path(d.data).resolve() in read and held < d.split_articles:
        raise ConfigError(f"data.model {model} was pretrained on {d.data} holding out its last {held} articles, but this run "
                          f"evaluates on the last {d.split_articles}; pretrain it with data.squad_heldout_articles={d.split_articles}")
    if d.dev and Path(d.dev).resolve() in read:
        raise ConfigError(f"data.model {model} was pretrained on {d.dev}, the evaluation file; pretrain it on the training file")


def masked_lm(source: Any, log: Log) -> Any:
    """``source``'s masked LM; an encoder without one (all-MiniLM-L6-v2) gets a fresh head (transform, LayerNorm, output
    bias) under the decoder tied to its token embeddings."""
    from attnkit.errors import ConfigError as _ConfigError
    from attnkit.models.bert_heads import BertMLM
    from attnkit.training.finetune import encoder_of
    from attnkit.training.pet import mlm_of

    try:
        return mlm_of(source)
    except _ConfigError:
        enc = encoder_of(source)
        model = BertMLM(enc.config)
        model.bert.load_state_dict(enc.state_dict())
        log("the model has no masked-LM head: it starts fresh (the decoder is tied to the token embeddings)")
        return model


JOBS = {"mlm-qa": MLMQAJob}

__all__ = ["JOBS", "MLMQADataConfig", "MLMQAJob"]
