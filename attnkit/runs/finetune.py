"""Jobs for fine-tuning a BERT-family encoder: sentence (pair) classification and tagging (NER).

Devlin et al. 2019, section 4 and figure 4: the encoder of a pretrained model gets a fresh head,
a classifier on the pooled sequence for single sentences and ``[CLS] A [SEP] B [SEP]`` pairs, a
per-token classifier for NER with each word's tag on its first sub-word. The labels are those
of the training file; a dev or test file with a label training never had is an error.

The length of a run is counted in epochs (:func:`epoch_schedule`, shared with extractive QA):
one epoch is ``ceil(n / (batch_size * grad_accum))`` optimizer steps, the run
``ceil(epochs * that)`` steps; the warm-up is ``warmup_ratio`` of the steps and the dev set is
evaluated once an epoch. Each of the three is taken from the train config instead when its
data-config switch (``steps_from_epochs``, ``warmup_from_ratio``, ``eval_per_epoch``) is off;
the command line turns a switch off when the train key itself is given
(:func:`explicit_schedule`), so ``--set train.steps=300`` means 300 steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from attnkit.config import Config, check, parse_assignment
from attnkit.errors import ConfigError, DataError
from attnkit.peft.method import PEFTConfig
from attnkit.runs.base import Job, Log, Prepared, model_dir
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig
from attnkit.training.finetune import FinetuneConfig
from attnkit.training.loop import TrainResult, Trainer, pick_device

# train key -> the data-config switch that derives it from the epochs
SCHEDULE_SWITCHES = {
    "train.steps": "data.steps_from_epochs",
    "train.schedule.warmup": "data.warmup_from_ratio",
    "train.eval.every": "data.eval_per_epoch",
}


def epoch_steps(n_examples: int, batch_size: int, grad_accum: int = 1) -> int:
    """Optimizer steps in one pass over ``n_examples``: ``ceil(n / (batch_size * grad_accum))``, at least 1."""
    return max(1, math.ceil(n_examples / (batch_size * grad_accum)))


def epoch_schedule(train: TrainConfig, data: Any, n_examples: int, *, evaluate: bool = True) -> TrainConfig:
    """``train`` with its steps, warm-up and evaluation cadence counted from ``data.epochs``.

    The one conversion of every fine-tuning task (classify, ner, qa): ``steps =
    ceil(epochs * ceil(n / (batch_size * grad_accum)))`` when ``data.steps_from_epochs``;
    ``schedule.warmup = int(warmup_ratio * steps)`` when ``data.warmup_from_ratio``;
    ``eval.every`` = one epoch's steps (0 without a dev set) when ``data.eval_per_epoch``.

    Args:
        train: the training config.
        data: a data config with ``epochs``, ``warmup_ratio`` and the three switches.
        n_examples: training examples (QA: windows) in one epoch.
        evaluate: whether there is a dev set to evaluate on.

    Returns:
        The filled-in training config (``log_every`` capped at the steps).

    Raises:
        ConfigError: the result is invalid (e.g. a given warm-up not below the steps).
    """
    per_epoch = epoch_steps(n_examples, train.batch_size, train.grad_accum)
    steps = max(1, math.ceil(data.epochs * per_epoch)) if data.steps_from_epochs else train.steps
    changes: dict[str, Any] = {"steps": steps, "log_every": min(train.log_every, steps)}
    if data.warmup_from_ratio:
        changes["schedule"] = train.schedule.replace(warmup=int(data.warmup_ratio * steps))
    if data.eval_per_epoch:
        changes["eval"] = train.eval.replace(every=min(per_epoch, steps) if evaluate else 0)
    try:
        return train.replace(**changes)
    except ConfigError as e:
        raise ConfigError(f"{e} (steps={steps}: {data.epochs} epochs of {per_epoch} optimizer steps)") from None


def explicit_schedule(assignments: Sequence[str]) -> list[str]:
    """The switch assignments that keep given schedule keys: ``train.steps=300`` -> ``data.steps_from_epochs=false``.

    A switch the assignments set themselves is left alone.
    """
    keys = {parse_assignment(a)[0] for a in assignments}
    keys |= {f"train.{k}" for k in list(keys) if k == "steps"}  # a bare "steps" is train's
    return [f"{switch}=false" for key, switch in SCHEDULE_SWITCHES.items() if key in keys and switch not in keys]


@dataclass(frozen=True, kw_only=True)
class FinetuneSource(Config):
    """What every fine-tuning task (classify, ner, qa) starts from and reads, and how its length is counted.

    ``model`` is an attnkit or Hugging Face BERT-family directory (or ``all-MiniLM-L6-v2``, the
    packaged copy); ``tokenizer`` a ``tokenizer.json`` or ``vocab.txt`` (default: the model's);
    ``train`` and ``dev`` the labelled files; ``eval_limit`` reads at most that many dev (and test)
    examples (0: all). The switches ``steps_from_epochs``, ``warmup_from_ratio`` and
    ``eval_per_epoch`` derive ``train.steps``, ``train.schedule.warmup`` and ``train.eval.every``
    from the epochs (see :func:`epoch_schedule`).
    """

    model: str = ""
    tokenizer: str = ""
    train: str = ""
    dev: str = ""
    eval_limit: int = 0
    steps_from_epochs: bool = True
    warmup_from_ratio: bool = True
    eval_per_epoch: bool = True

    def validate(self) -> None:
        check(self.eval_limit >= 0, "eval_limit", self.eval_limit, "must be >= 0 (0 reads everything)")


@dataclass(frozen=True, kw_only=True)
class CheckpointModelConfig(Config):
    """Changes to the architecture of the checkpoint being fine-tuned (``model.*``).

    ``share_layers=false`` on an ALBERT checkpoint copies its one shared layer into independent
    layers at load (:func:`~attnkit.models.bert.unshare_layers`): the same outputs before the
    first update (the fresh head too, built before the copy, so the same ``train.init_seed`` gives
    the shared run's head), separate weights after. Null keeps the checkpoint's choice, so a shared
    checkpoint stays shared unless asked; ``true`` on a checkpoint with separate layers is refused.
    """

    share_layers: bool | None = None


@dataclass(frozen=True, kw_only=True)
class FinetuneDataConfig(FinetuneConfig, FinetuneSource):
    """What ``classify`` and ``ner`` fine-tune, on which files, and for how long.

    ``train`` and ``dev`` are GLUE ``.tsv`` files (classify) or CoNLL files (ner); the best model
    by the dev metric is kept. ``test``, if given, is a labelled file of the same kind scored
    once with the saved model at the end, its rows cut only at the model's position limit.
    The other file fields and the schedule switches are :class:`FinetuneSource`'s.
    """

    test: str = ""
    # long documents (classify; attnkit.training.long_documents): truncate at max_len, or chunks that fit the positions
    # (at most max_chunks) whose logits are averaged, which carry memory_tokens memory tokens from chunk to chunk, or
    # whose layers also attend to the earlier chunks' last memory_len token positions (xl; 0: all of them)
    long: Literal["truncate", "average", "memory", "xl"] = "truncate"
    memory_tokens: int = 4
    max_chunks: int = 8
    memory_len: int = 0
    # feature-based (Devlin et al. 2019, section 5.3): a frozen encoder's last / last four / ELMo-weighted layers feed a
    # small task model (attnkit.models.features); "none" fine-tunes every weight
    features: Literal["none", "last", "last4", "weighted"] = "none"

    def validate(self) -> None:
        FinetuneConfig.validate(self)
        FinetuneSource.validate(self)
        check(self.memory_tokens > 0 and self.max_chunks > 0, "max_chunks", self.max_chunks, "and memory_tokens must be positive")
        check(self.memory_len >= 0, "memory_len", self.memory_len, "must be >= 0 (0: every earlier chunk)")


# train.steps until the epochs are counted (data.steps_from_epochs): large, so that a warm-up or an
# evaluation cadence given by hand is checked against the counted steps, not against a default
STEPS_FROM_EPOCHS = 1_000_000_000


def finetune_train(metric: str, **changes: Any) -> TrainConfig:
    """BERT's fine-tuning recipe (Devlin et al. 2019, appendix A.3): AdamW, lr 5e-5, batch 32, linear decay, clipping 1.0.

    ``steps`` is :data:`STEPS_FROM_EPOCHS` until :func:`epoch_schedule` counts them from the data.
    """
    base = TrainConfig(
        steps=STEPS_FROM_EPOCHS, batch_size=32, log_every=50,
        optim=OptimConfig(name="adamw", lr=5e-5, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, clip_norm=1.0),
        schedule=ScheduleConfig(kind="linear", warmup=0), eval=EvalConfig(metric=metric, mode="max"),
        reg=RegularizationConfig(label_smoothing=0.0),
    )
    return base.replace(**changes)


def read_labelled(task: str, d: FinetuneDataConfig) -> tuple[Any, Any, list[str]]:
    """Training and dev data (``d.limit`` / ``d.eval_limit`` examples at most) and the label names of training.

    Raises:
        ConfigError, DataError: empty files, missing label columns, unseen dev labels, one label only.
    """
    limit, eval_limit = d.limit or None, d.eval_limit or None
    if task == "classify":
        from attnkit.data.glue import check_labels, read_classification_tsv

        train = read_classification_tsv(d.train, limit=limit)
        if not len(train):
            raise ConfigError(f"{d.train} holds no examples")
        if train.labels is None:
            raise ConfigError(f"{d.train} has no 'label' column; training needs labels")
        dev = read_classification_tsv(d.dev, limit=eval_limit) if d.dev else None
        if dev is not None:
            if not len(dev):
                raise DataError(f"{d.dev} holds no examples; evaluation needs some (or leave out the dev file)")
            if (dev.pairs is None) != (train.pairs is None):
                raise ConfigError(f"{d.train} and {d.dev} differ: one holds sentence pairs, the other single sentences")
            if dev.labels is None:
                raise ConfigError(f"{d.dev} has no 'label' column; evaluation needs labels")
            check_labels(train.label_names(), dev)
        names = list(train.label_names())
        if len(names) < 2:
            raise ConfigError(f"{d.train} has only the label {names!r}; classification needs at least two")
    else:
        from attnkit.data.conll import check_tags, read_conll

        train = read_conll(d.train, limit=limit)
        dev = read_conll(d.dev, limit=eval_limit) if d.dev else None
        names = list(train.tag_names())
        if len(names) < 2:
            raise ConfigError(f"{d.train} has only the tag {names!r}; tagging needs at least two (an entity tag besides 'O')")
        if dev is not None:
            check_tags(names, dev)
    return train, dev, names


def padding_stats(lengths: list[int], batch_size: int, bucket_size: int) -> tuple[int, int]:
    """Real tokens and padded batch positions of one epoch of length-bucketed batches."""
    from attnkit.data.batching import bucketed_batches

    batches = bucketed_batches(lengths, batch_size, bucket_size=bucket_size)
    return sum(lengths), sum(len(b) * max(lengths[i] for i in b) for b in batches)


class FinetuneJob(Job):
    """``attnkit finetune classify|ner``: a fresh head on a pretrained encoder, trained on labelled text.

    Rows longer than ``data.max_len`` tokens (capped at the model's positions) are truncated and
    counted; batches are padded to their own longest row, rows of similar length together. The
    fresh head's weights are fixed by ``train.init_seed`` (so seeds differ only in data order
    and dropout: the ingredients of a model soup). ``classifier=auto`` takes the mean pooling a
    sentence-transformers checkpoint was trained with.
    """

    def __init__(self, task: str) -> None:
        if task not in ("classify", "ner"):
            raise ConfigError(f"FinetuneJob trains classify or ner, not {task!r}")
        self.task = task
        self.summary = ("sentence or sentence-pair classification (GLUE .tsv)" if task == "classify"
                        else "token classification, named entities (CoNLL)")
        self.config_types = {"model": CheckpointModelConfig, "train": TrainConfig, "data": FinetuneDataConfig, "peft": PEFTConfig}
        self.optional_on_resume = ("model",)  # runs saved before the section existed resume with its defaults
        self.metrics = ("loss", "accuracy") if task == "classify" else ("loss", "precision", "recall", "f1")

    def defaults(self) -> dict[str, Config]:
        return {"model": CheckpointModelConfig(), "train": finetune_train("accuracy" if self.task == "classify" else "f1"),
                "data": FinetuneDataConfig(), "peft": PEFTConfig()}

    def check(self, configs: dict[str, Config]) -> None:
        t, d = configs["train"], configs["data"]
        if not d.model or not d.train:  # type: ignore[attr-defined]
            raise ConfigError(f"attnkit finetune {self.task} needs --model DIR and --train FILE, or --recipe NAME with --data-root")
        if d.long != "truncate" and (self.task != "classify" or configs["peft"].enabled):  # type: ignore[attr-defined]
            raise ConfigError(f"data.long={d.long} reads documents in chunks for finetune classify without --peft")  # type: ignore[attr-defined]
        if not d.dev and not d.eval_per_epoch and t.eval.every:  # type: ignore[attr-defined]
            raise ConfigError(f"train.eval.every={t.eval.every} needs a dev file (data.dev) to evaluate on")  # type: ignore[attr-defined]

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.loading import load_model_and_tokenizer
        from attnkit.models.xlnet import XLNetModel
        from attnkit.training import finetune as ft

        t: TrainConfig = configs["train"]  # type: ignore[assignment]
        d: FinetuneDataConfig = configs["data"]  # type: ignore[assignment]
        source_dir = model_dir(d.model)
        source, tok = load_model_and_tokenizer(source_dir, d.tokenizer or None)
        sharing: CheckpointModelConfig = configs.get("model", CheckpointModelConfig())  # type: ignore[assignment]
        backbone = ft.backbone_of(source)
        if isinstance(backbone, XLNetModel):
            check_xlnet_options(d, configs.get("peft", PEFTConfig()), sharing)  # type: ignore[arg-type]
        if d.features != "none":  # a frozen encoder: un-shared before the feature model copies it
            source = set_layer_sharing(source, sharing, log)
        train_data, dev_data, labels = read_labelled(self.task, d)
        if not resume:  # a resumed run keeps the schedule it was given
            t = epoch_schedule(t, d, len(train_data), evaluate=dev_data is not None)
        if dev_data is None and t.eval.every:
            raise ConfigError(f"train.eval.every={t.eval.every} needs a dev file (data.dev) to evaluate on")
        limit = backbone.config.max_len
        p: PEFTConfig = configs.get("peft", PEFTConfig())  # type: ignore[assignment]
        if p.method in ("prompt", "ptuning"):
            limit -= p.n_virtual  # the virtual tokens take the first positions
        max_len = min(d.max_len, limit)
        if max_len < d.max_len:
            log(f"max_len {d.max_len} is beyond the model's {limit} positions; using {max_len}")
        encode = ft.encode_classification if self.task == "classify" else ft.encode_tagging
        train_enc = encode(tok, train_data, labels, max_len)
        dev_enc = encode(tok, dev_data, labels, max_len) if dev_data is not None else None
        for name, e in (("train", train_enc), ("dev", dev_enc)):
            if e is not None and e.truncated:
                log(f"truncated {e.truncated} of {len(e)} {name} examples to {max_len} tokens")
        n_tokens, n_padded = padding_stats(train_enc.lengths(), t.batch_size, d.bucket_size)
        log(f"{self.task}: {len(train_data)} train / {len(dev_data) if dev_data is not None else 0} dev examples, "
            f"{len(labels)} labels ({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''}); "
            f"{t.steps} steps; padding {100 * (1 - n_tokens / max(n_padded, 1)):.1f}% of batch positions")
        device = pick_device(t.device)
        kw: dict[str, Any] = dict(batch_size=t.batch_size, eval_batch_size=d.eval_batch_size, bucket_size=d.bucket_size,
                                  pad_id=tok.pad_id, device=device, label_smoothing=t.reg.label_smoothing, rdrop=t.reg.rdrop)
        if self.task == "classify":
            task: Any = ft.ClassificationTask(train_enc, dev_enc, **kw)
        else:
            task = ft.TaggingTask(train_enc, dev_enc, tags=labels, dev_sentences=dev_data, **kw)
        classifier = d.classifier
        if self.task == "classify" and classifier == "auto" and ft.checkpoint_pooling(source_dir) == "mean":
            classifier = "mean"  # the pooling a sentence-embedding checkpoint was trained with
            log("classifier: mean pooling (the checkpoint's sentence-transformers pooling; data.classifier=pooler to change)")
        torch.manual_seed(t.init_seed)  # the fresh head's weights: fixed by train.init_seed, whatever train.seed
        if d.features != "none":
            if p.enabled:
                raise ConfigError(f"data.features={d.features} freezes the encoder already; leave out peft.method={p.method}")
            from attnkit.models.features import feature_model

            model = feature_model(source, self.task, labels, d.features)
            log(f"feature-based: frozen encoder, {d.features} features; {sum(x.numel() for x in model.parameters() if x.requires_grad):,} "
                "trainable parameters")
        else:
            model = ft.build_head(source, self.task, labels, d.classifier_dropout, classifier)
            # un-shared once the head is built, so the fresh head is the shared run's for the same init_seed
            # (building an encoder of separate layers first would draw other random numbers before the head's)
            model = set_layer_sharing(model, sharing, log)
        if d.long != "truncate":  # long documents in chunks (average of chunk logits, or carried memory tokens)
            from attnkit.training.long_documents import prepare_long

            model, task = prepare_long(model, tok, train_data, dev_data, labels, d, t, device, max_len, log)
        state: dict[str, Any] = {"device": device, "labels": labels}
        if p.enabled:
            state["peft"] = adapt(model, p, source_dir, tok, log)
        return Prepared(model=model, task=task, configs={**configs, "train": t}, tokenizer=tok, state=state)

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        final = super().finish(prepared, trainer, result, out, log)
        if final:
            scores = ", ".join(f"{k}={v:.4f}" for k, v in final.items() if k != "best_step")
            log(f"best dev (step {final.get('best_step')}): {scores}")
        final.update(prepared.state.get("peft", {}))
        d: FinetuneDataConfig = prepared.configs["data"]  # type: ignore[assignment]
        if d.test:
            if d.long != "truncate":
                from attnkit.training.long_documents import score_long_test

                test = score_long_test(out / "model", d, prepared.state["device"])
            else:
                test = self.score_test(out / "model", d, prepared.state["device"])
            log(f"test ({d.test}): " + ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, float)))
            final.update({f"test_{k}": v for k, v in test.items()})
        return final

    def score_test(self, saved: Path, d: FinetuneDataConfig, device: Any) -> dict[str, Any]:
        """Scores of the saved model on ``d.test`` (fp32; rows cut only at the model's position limit)."""
        from attnkit.evaluation import labelled_scores
        from attnkit.loading import load_model_and_tokenizer
        from attnkit.training import finetune as ft

        model, tok = load_model_and_tokenizer(saved)
        model.to(device).eval()
        labels = list(model.config.labels)
        max_len = ft.backbone_of(model).config.max_len
        if self.task == "classify":
            from attnkit.data.glue import check_labels, read_classification_tsv

            data: Any = read_classification_tsv(d.test, limit=d.eval_limit or None)
            if data.labels is None:
                raise ConfigError(f"{d.test} has no 'label' column; a test file needs labels")
            check_labels(labels, data)
            enc = ft.encode_classification(tok, data, labels, max_len)
        else:
            from attnkit.data.conll import check_tags, read_conll

            data = read_conll(d.test, limit=d.eval_limit or None)
            check_tags(labels, data)
            enc = ft.encode_tagging(tok, data, labels, max_len)
        if not len(enc):
            raise DataError(f"{d.test} holds no examples")
        logits = ft.predict_logits(model, enc, pad_id=tok.pad_id, batch_size=d.eval_batch_size, device=device)
        return {**labelled_scores(self.task, logits, data, enc, labels), "examples": len(enc), "truncated": enc.truncated}


def check_xlnet_options(d: FinetuneDataConfig, p: PEFTConfig, sharing: CheckpointModelConfig) -> None:
    """Refuse, in one line each, the options that are built for BERT-family encoders only."""
    if d.features != "none":
        raise ConfigError(f"data.features={d.features} reads a BERT-family encoder's layers; an XLNet model fine-tunes whole (leave it at none)")
    if d.long != "truncate":
        raise ConfigError(f"data.long={d.long} is for BERT-family encoders; an XLNet model reads truncated rows (leave it at truncate)")
    if p.enabled:
        raise ConfigError(f"peft.method={p.method} adapts BERT-family encoders; leave out --peft for an XLNet model")
    if sharing.share_layers is not None:
        raise ConfigError("model.share_layers is for ALBERT-style encoders; leave it unset for an XLNet model")


def set_layer_sharing(source: Any, m: CheckpointModelConfig, log: Log) -> Any:
    """The loaded checkpoint with ``model.share_layers`` applied to its encoder (see :class:`CheckpointModelConfig`)."""
    from attnkit.models.bert import unshare_layers
    from attnkit.training import finetune as ft

    if m.share_layers is None:
        return source
    enc = ft.encoder_of(source)
    if m.share_layers and not enc.config.share_layers:
        raise ConfigError("model.share_layers=true: the checkpoint has separate layers, which cannot be made one; leave it unset")
    if not m.share_layers and enc.config.share_layers:
        with torch.random.fork_rng(devices=[]):  # the copies' throw-away initialisation leaves the run's generator alone
            unshared = unshare_layers(enc)
        log(f"model.share_layers=false: the checkpoint's shared layer copied into {enc.config.n_layers} independent layers")
        if enc is source:
            return unshared
        # replaced where it is a child module: BertPretraining's ``bert`` is a read-only view of ``mlm.bert``
        parent, name = next((p, n) for p in source.modules() for n, c in p.named_children() if c is enc)
        setattr(parent, name, unshared)
        if getattr(getattr(parent, "config", None), "encoder", None) == enc.config:  # a head saves its encoder's config
            parent.config = parent.config.replace(encoder=unshared.config)
    return source


def adapt(model: Any, p: PEFTConfig, base: Path, tok: Any, log: Log) -> dict[str, Any]:
    """Apply the ``peft`` section's adapter to ``model`` (saved as an adapter naming ``base``); log and return its parameter count."""
    from attnkit.peft import apply_peft, attach_saving, trainable_parameters

    ids = None
    if p.init == "text":  # a WordPiece tokenizer (BERT family) or a tokenizers.Tokenizer (GPT)
        ids = [tok.tokenizer.token_to_id(t) for t in tok.tokenize(p.init_text)] if hasattr(tok, "tokenize") else tok.encode(p.init_text).ids
    apply_peft(model, p, ids)
    if p.init_from is not None:  # after the adapter is attached: its weights and the head's replace their initialisation
        from attnkit.peft.files import init_adapter_from

        init_adapter_from(model, p.init_from, base=base)
        log(f"peft {p.method}: adapter and head start from {p.init_from}")
    attach_saving(model, base)
    count = trainable_parameters(model)
    log(f"peft {p.method}: {count}")
    return {"trainable_params": count.trainable, "total_params": count.total, "trainable_percent": round(count.percent, 4)}


JOBS = {"classify": lambda: FinetuneJob("classify"), "ner": lambda: FinetuneJob("ner")}

__all__ = ["FinetuneDataConfig", "FinetuneJob", "JOBS", "epoch_schedule", "epoch_steps", "explicit_schedule", "finetune_train",
           "read_labelled"]
