"""The few-shot classification job: ``attnkit finetune fewshot`` (PET, P-tuning prompts, standard fine-tuning; LM-BFF protocol).

For each of ``data.seeds`` seeds, ``data.shots`` training examples per class and a dev set of as
many are drawn from ``data.train`` (Gao et al. 2021, section 3; :func:`~attnkit.training.pet.lmbff_sample`);
every model is chosen on that seed's dev set and scored on ``data.test`` (for GLUE tasks, the
original dev file). ``data.method`` picks what trains:

* ``pet`` (Schick & Schütze 2021): one masked LM per pattern of ``data.patterns``, read through
  ``data.verbalizer`` and fine-tuned with cross-entropy over the verbaliser scores; their
  ensemble (weights uniform or each pattern's training-set accuracy before training) labels
  ``data.unlabeled`` (default: the pool's rows not drawn) with soft labels, on which a sequence
  classifier is distilled (``data.distill``). With ``--peft ptuning`` (or ``prompt``) each
  pattern model is a frozen masked LM behind P-tuning's continuous prompt (Liu et al. 2021,
  :mod:`attnkit.peft.prompt`), its virtual tokens before the pattern;
* ``finetune``: a fresh classifier on the encoder, trained on the same K-shot sets (the baseline).

Every PET run also scores each pattern zero-shot (no training) on the test set. The main run's
Trainer trains the last model of the first seed (``OUT/model``: the distilled classifier, the
last pattern's masked LM, or the classifier); the other models train in ``OUT/seeds/SEED/NAME``.
``eval.json`` holds the mean and standard deviation over the seeds; ``OUT/seeds.json`` each seed's
scores. A resumed run trains the first seed's earlier models again (they are deterministic).
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.io import atomic_write_text
from attnkit.peft.method import PEFTConfig
from attnkit.runs.base import Job, Log, Prepared, model_dir
from attnkit.training.config import EvalConfig, OptimConfig, ScheduleConfig, TrainConfig
from attnkit.training.loop import TrainResult, Trainer, pick_device

# PET's sentiment pattern and verbaliser (Schick & Schütze 2021, Yelp: "It was ___.", great / terrible)
SST2_PATTERN = "{a} It was [MASK]."


@dataclass(frozen=True, kw_only=True)
class FewshotDataConfig(Config):
    """What ``fewshot`` trains, on which files, and how.

    ``train`` is the labelled pool the K-shot sets are drawn from; ``test`` the labelled file every
    model is scored on; ``unlabeled`` a GLUE ``.tsv`` whose labels are ignored (default: the pool's
    rows that were not drawn), at most ``unlabeled_limit`` rows (0: all). ``patterns`` are cloze
    patterns with ``{a}`` (and ``{b}`` for pairs) and one ``[MASK]``; ``verbalizer`` maps every label
    to one token, ``label=word,label=word``. ``ensemble``: ``uniform`` or ``prior`` (PET's weights,
    each pattern's training accuracy before training). ``temperature``: of the soft labels.
    ``distill_steps``: steps of the distillation (0: ``train.steps``). ``limit`` / ``eval_limit``
    read at most that many pool / test rows (0: all). ``lm_alpha``: the weight of PET's auxiliary
    masked-LM loss on the unlabelled rows put through each pattern (section 3.1; the paper's 1e-4; 0: off),
    with ``lm_ratio`` unlabelled rows per labelled one in a step (:mod:`attnkit.training.pet_aux`).
    """

    model: str = ""
    tokenizer: str = ""
    train: str = ""
    test: str = ""
    unlabeled: str = ""
    method: Literal["pet", "finetune"] = "pet"
    patterns: tuple[str, ...] = (SST2_PATTERN,)
    verbalizer: str = ""
    shots: int = 16
    seeds: int = 5
    distill: bool = True
    ensemble: Literal["uniform", "prior"] = "prior"
    temperature: float = 2.0
    distill_steps: int = 0
    unlabeled_limit: int = 10000
    max_len: int = 128
    eval_batch_size: int = 64
    classifier: Literal["auto", "pooler", "cls_tanh", "cls_gelu", "mean"] = "auto"
    limit: int = 0
    eval_limit: int = 0
    lm_alpha: float = 0.0
    lm_ratio: int = 3
    # patterns=["auto"]: AutoPrompt (attnkit.training.autoprompt) finds auto_triggers tokens for the {t} slot of
    # auto_template on each seed's training set ("": "{a} {t} [MASK]." for sentences, "{a} [MASK] {t} {b}" for pairs)
    auto_template: str = ""
    auto_triggers: int = 3
    auto_iters: int = 20
    auto_candidates: int = 10

    def validate(self) -> None:
        for name in ("auto_triggers", "auto_iters", "auto_candidates"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        check(self.shots >= 1, "shots", self.shots, "must be >= 1")
        check(self.seeds >= 1, "seeds", self.seeds, "must be >= 1")
        check(len(self.patterns) >= 1, "patterns", self.patterns, "must name at least one pattern")
        check(self.temperature > 0, "temperature", self.temperature, "must be positive")
        check(self.max_len >= 8, "max_len", self.max_len, "must be >= 8")
        for name in ("distill_steps", "unlabeled_limit", "limit", "eval_limit"):
            check(getattr(self, name) >= 0, name, getattr(self, name), "must be >= 0")
        check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "must be >= 1")
        check(0.0 <= self.lm_alpha < 1.0, "lm_alpha", self.lm_alpha, "must be in [0, 1) (PET's auxiliary LM: 1e-4; 0: off)")
        check(self.lm_ratio >= 1, "lm_ratio", self.lm_ratio, "must be >= 1")


def fewshot_train(**changes: Any) -> TrainConfig:
    """LM-BFF's few-shot schedule (Gao et al. 2021, appendix B): AdamW, lr 1e-5, batch 8, 1,000 steps, dev every 100."""
    base = TrainConfig(
        steps=1000, batch_size=8, log_every=50,
        optim=OptimConfig(name="adamw", lr=1e-5, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, clip_norm=1.0),
        schedule=ScheduleConfig(kind="linear", warmup=0), eval=EvalConfig(every=100, metric="accuracy", mode="max"),
    )
    return base.replace(**changes)


class FewshotJob(Job):
    task = "fewshot"
    summary = "few-shot classification: PET cloze patterns and verbalisers, P-tuning prompts or a classifier (LM-BFF protocol)"
    config_types = {"train": TrainConfig, "data": FewshotDataConfig, "peft": PEFTConfig}
    metrics = ("loss", "accuracy")

    def defaults(self) -> dict[str, Config]:
        return {"train": fewshot_train(), "data": FewshotDataConfig(), "peft": PEFTConfig()}

    def check(self, configs: dict[str, Config]) -> None:
        d: FewshotDataConfig = configs["data"]  # type: ignore[assignment]
        p: PEFTConfig = configs.get("peft", PEFTConfig())  # type: ignore[assignment]
        if not d.model or not d.train or not d.test:
            raise ConfigError("attnkit finetune fewshot needs --model DIR, --train FILE and --test FILE, or --recipe NAME with --data-root")
        if d.method == "pet" and not d.verbalizer:
            raise ConfigError("data.method=pet needs --verbalizer LABEL=WORD,... (one vocabulary token per label)")
        if p.enabled and (p.method not in ("prompt", "ptuning") or d.method != "pet"):
            raise ConfigError(f"peft.method={p.method!r}: few-shot runs take the soft prompts of P-tuning (ptuning) or prompt "
                              "tuning (prompt) as PET's pattern prefix, with data.method=pet")
        if configs["train"].eval.every == 0:  # type: ignore[attr-defined]
            raise ConfigError("train.eval.every=0: few-shot models are chosen on the K-shot dev set; give train.eval.every > 0")

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.data.glue import check_labels, read_classification_tsv
        from attnkit.loading import load_model_and_tokenizer

        d: FewshotDataConfig = configs["data"]  # type: ignore[assignment]
        source_dir = model_dir(d.model)
        source, tok = load_model_and_tokenizer(source_dir, d.tokenizer or None)
        pool = read_classification_tsv(d.train, limit=d.limit or None)
        test = read_classification_tsv(d.test, limit=d.eval_limit or None)
        if pool.labels is None or test.labels is None:
            raise ConfigError(f"{d.train if pool.labels is None else d.test} has no 'label' column; few-shot runs need labels there")
        labels = list(pool.label_names())
        check_labels(labels, test)
        unlabeled = read_classification_tsv(d.unlabeled) if d.unlabeled else None
        run = SeedRuns(configs, source, source_dir, tok, pool, test, unlabeled, labels, out, log)
        state: dict[str, Any] = {"runs": run, "device": run.device}
        if d.method == "pet":
            state["zero_shot"] = run.zero_shot()
            if state["zero_shot"]:
                log("zero-shot test accuracy: " + ", ".join(f"{k}={v:.4f}" for k, v in state["zero_shot"].items()))
        model, task, train = run.seed(0, main=True)
        return Prepared(model=model, task=task, configs={**configs, "train": train}, tokenizer=tok, state=state)

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        run: SeedRuns = prepared.state["runs"]
        prepared.task.snapshot.restore(prepared.model)
        per_seed = [run.finish_seed(0, prepared.model)]
        for s in range(1, run.d.seeds):
            run.seed(s, main=False)
            per_seed.append(run.scores[s])
        atomic_write_text(out / "seeds.json", json.dumps(per_seed, indent=2) + "\n")
        final: dict[str, Any] = dict(prepared.state.get("zero_shot", {}))
        for key in per_seed[0]:
            values = [s[key] for s in per_seed if isinstance(s.get(key), float)]
            if values:
                final[f"{key}_mean"] = statistics.fmean(values)
                final[f"{key}_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
        final["seeds"] = run.d.seeds
        final["shots"] = run.d.shots
        log(f"test accuracy over {run.d.seeds} seeds: {100 * final['accuracy_mean']:.2f} +- {100 * final['accuracy_std']:.2f}")
        return final


CALIBRATION_ROWS = 1000  # unlabelled rows whose mean scores estimate each label word's prior for calibrated zero-shot


class SeedRuns:
    """The models of every seed: which ones train, in what order, and their test scores."""

    def __init__(self, configs: dict[str, Config], source: Any, source_dir: Path, tok: Any, pool: Any, test: Any, unlabeled: Any,
                 labels: list[str], out: Path, log: Log) -> None:
        from attnkit.training import pet
        from attnkit.training.finetune import encoder_of

        self.train_cfg: TrainConfig = configs["train"]  # type: ignore[assignment]
        self.d: FewshotDataConfig = configs["data"]  # type: ignore[assignment]
        self.p: PEFTConfig = configs.get("peft", PEFTConfig())  # type: ignore[assignment]
        self.source, self.source_dir, self.tok, self.labels, self.out, self.log = source, source_dir, tok, labels, out, log
        self.pool, self.test, self.unlabeled = pool, test, unlabeled
        self.device = pick_device(self.train_cfg.device)
        limit = encoder_of(source).config.max_len
        self.max_len = min(self.d.max_len, limit)
        self.auto = tuple(self.d.patterns) == ("auto",)
        self.patterns = [] if self.auto else [pet.Pattern(t) for t in self.d.patterns]
        self.scores: dict[int, dict[str, Any]] = {}
        self.pending: dict[str, Any] = {}
        if self.d.method == "pet":
            self.mlm = pet.mlm_of(source)
            words = pet.parse_verbalizer(self.d.verbalizer, labels)
            self.label_ids = pet.verbalizer_ids(tok, words)
            self.prompt_len = self.p.n_virtual if self.p.enabled else 0
            self.test_cloze = [pet.encode_cloze(tok, test, pat, labels, self.max_len) for pat in self.patterns]

    # -- pieces ------------------------------------------------------------------------------------
    def _cloze(self, data: Any, pattern: Any) -> Any:
        from attnkit.training import pet

        return pet.encode_cloze(self.tok, data, pattern, self.labels, self.max_len - self.prompt_len)

    def _pet_model(self) -> Any:
        from attnkit.training.pet import PETModel

        mlm = copy.deepcopy(self.mlm)
        if self.p.enabled:
            from attnkit.runs.finetune import adapt

            adapt(mlm, self.p, self.source_dir, self.tok, self.log)
        return PETModel(mlm, self.label_ids)

    def _scores(self, model: Any, data: Any) -> torch.Tensor:
        from attnkit.training.pet import cloze_scores

        model.to(self.device)
        return cloze_scores(model, data, pad_id=self.tok.pad_id, batch_size=self.d.eval_batch_size, device=self.device)[1]

    def zero_shot(self) -> dict[str, float]:
        """Each pattern's test accuracy with the untrained masked LM, and that of their uniform ensemble
        (AutoPrompt's patterns: each seed's, in its scores); the same calibrated (``zero_shot_calibrated_*``,
        :func:`~attnkit.training.pet.calibrated`) by each pattern's mean scores over unlabelled rows:
        ``data.unlabeled``, else the training pool's texts (their labels unread), at most :data:`CALIBRATION_ROWS`
        (and ``data.unlabeled_limit``) drawn at random."""
        import random

        from attnkit.metrics import accuracy
        from attnkit.training import pet

        if self.auto:
            return {}

        model = pet.PETModel(self.mlm, self.label_ids)
        rows = self.unlabeled if self.unlabeled is not None else self.pool
        index = range(len(rows))
        limit = min(CALIBRATION_ROWS, self.d.unlabeled_limit or CALIBRATION_ROWS)
        if len(rows) > limit:
            index = sorted(random.Random(0).sample(index, limit))
        rows = pet.subset(rows, index, keep_labels=False)
        raw = [self._scores(model, c) for c in self.test_cloze]
        priors = [self._scores(model, pet.encode_cloze(self.tok, rows, pat, self.labels, self.max_len)) for pat in self.patterns]
        targets = self.test_cloze[0].targets
        out: dict[str, float] = {}
        for name, scores in (("zero_shot", raw), ("zero_shot_calibrated", [pet.calibrated(s, p) for s, p in zip(raw, priors)])):
            out.update({f"{name}_pattern{i}_accuracy": accuracy(targets, s.argmax(-1).tolist()) for i, s in enumerate(scores)})
            out[f"{name}_accuracy"] = accuracy(targets, pet.ensemble_scores(scores).argmax(-1).tolist())
        return out

    def _fit(self, model: Any, task: Any, train: TrainConfig, where: Path) -> None:
        trainer = Trainer(model, task, train, where, tokenizer=self.tok, progress=False, write=self.log)
        trainer.fit()
        task.snapshot.restore(model)
        shutil.rmtree(where / "checkpoints", ignore_errors=True)  # the chosen model is in where/model

    # -- one seed ----------------------------------------------------------------------------------
    def seed(self, s: int, *, main: bool) -> tuple[Any, Any, TrainConfig]:
        """Train seed ``s``'s models in order; with ``main``, return the last one untrained for the run's Trainer."""
        from attnkit.training import pet
        from attnkit.training import finetune as ft

        train_idx, dev_idx = pet.lmbff_sample(self.pool.labels, self.d.shots, s)
        train, dev = pet.subset(self.pool, train_idx), pet.subset(self.pool, dev_idx)
        self.log(f"seed {s}: {len(train)} training and {len(dev)} dev examples ({self.d.shots} per class)")
        where = self.out / "seeds" / str(s)
        cfg = self.train_cfg.replace(seed=self.train_cfg.seed + s)
        scores: dict[str, Any] = {"seed": s, "train_index": train_idx, "dev_index": dev_idx}
        self.scores[s] = scores
        units: list[tuple[str, Any, Any, TrainConfig]] = []
        if self.d.method == "finetune":
            torch.manual_seed(cfg.init_seed)
            model = ft.build_head(self.source, "classify", self.labels, None, self._classifier())
            tr, dv = (ft.encode_classification(self.tok, x, self.labels, self.max_len) for x in (train, dev))
            task = pet.DistillTask(tr, torch.nn.functional.one_hot(torch.tensor(tr.targets), len(self.labels)).float(), dv,
                                   batch_size=cfg.batch_size, pad_id=self.tok.pad_id, eval_batch_size=self.d.eval_batch_size,
                                   device=self.device)
            units.append(("classifier", model, task, cfg))
            return self._run_units(s, units, where, main, lambda m: self._score_classifier(m, scores, "accuracy"))
        if self.auto:
            self._autoprompt(train, scores, s)
        pattern_models: list[Any] = []
        priors: list[float] = []
        rows = self._unlabeled_rows(s, train_idx, dev_idx)
        for i, pattern in enumerate(self.patterns):
            tr, dv = self._cloze(train, pattern), self._cloze(dev, pattern)
            if self.d.ensemble == "prior":  # PET's w(p): the untrained model's accuracy on the training set
                from attnkit.metrics import accuracy

                plain = pet.PETModel(self.mlm, self.label_ids)
                priors.append(accuracy(tr.targets, self._scores(plain, tr).argmax(-1).tolist()))
            torch.manual_seed(cfg.init_seed)
            model = self._pet_model()
            task = pet.ClozeTask(tr, dv, batch_size=cfg.batch_size, pad_id=self.tok.pad_id, eval_batch_size=self.d.eval_batch_size,
                                 device=self.device, aux=self._auxiliary_lm(rows, pattern))
            units.append((f"pattern{i}", model, task, cfg))
            pattern_models.append(model)
        scores["ensemble_weights"] = priors if priors and sum(priors) > 0 else [1.0] * len(self.patterns)
        if not self.d.distill:
            return self._run_units(s, units, where, main, lambda m: self._score_patterns(pattern_models, scores, final=True))
        # distillation: the ensemble labels the unlabelled rows once every pattern model has trained
        torch.manual_seed(cfg.init_seed)
        clf = ft.build_head(self.source, "classify", self.labels, None, self._classifier())
        dcfg = cfg.replace(steps=self.d.distill_steps) if self.d.distill_steps else cfg
        lazy = _LazyDistill(self, pattern_models, scores, rows, dev, dcfg)
        units.append(("distilled", clf, lazy, dcfg))
        return self._run_units(s, units, where, main, lambda m: self._score_classifier(m, scores, "accuracy"))

    def _unlabeled_rows(self, s: int, train_idx: list[int], dev_idx: list[int]) -> Any:
        """Seed ``s``'s unlabelled rows (distillation, the auxiliary LM): ``data.unlabeled``, else the pool's rows
        not drawn, labels dropped; at most ``data.unlabeled_limit`` of them, drawn at random."""
        from attnkit.training import pet

        drawn = set(train_idx) | set(dev_idx)
        rows = self.unlabeled if self.unlabeled is not None else pet.subset(
            self.pool, [i for i in range(len(self.pool)) if i not in drawn], keep_labels=False)
        if self.d.unlabeled_limit and len(rows) > self.d.unlabeled_limit:
            import random

            rows = pet.subset(rows, sorted(random.Random(s).sample(range(len(rows)), self.d.unlabeled_limit)), keep_labels=False)
        return pet.subset(rows, range(len(rows)), keep_labels=False)

    def _auxiliary_lm(self, rows: Any, pattern: Any) -> Any:
        """PET's auxiliary masked LM over ``rows`` put through ``pattern`` (``data.lm_alpha``), or None when off."""
        if self.d.lm_alpha <= 0:
            return None
        from attnkit.training.pet_aux import AuxiliaryLM

        return AuxiliaryLM(self._cloze(rows, pattern).ids, mask_id=self.tok.mask_id, random_ids=self.tok.random_ids(),
                           special_ids=self.tok.special_ids, alpha=self.d.lm_alpha, ratio=self.d.lm_ratio)

    def _autoprompt(self, train: Any, scores: dict[str, Any], s: int) -> None:
        """AutoPrompt's trigger search on this seed's training set; the found pattern becomes the seed's one pattern."""
        from attnkit.metrics import accuracy
        from attnkit.training import pet
        from attnkit.training.autoprompt import search_triggers

        template = self.d.auto_template or ("{a} [MASK] {t} {b}" if self.pool.pairs is not None else "{a} {t} [MASK].")
        pattern, history = search_triggers(self.mlm, self.tok, train, self.labels, self.label_ids, template,
                                           n_triggers=self.d.auto_triggers, iters=self.d.auto_iters, k=self.d.auto_candidates,
                                           batch_size=len(train), max_len=self.max_len - self.prompt_len, seed=s, device=self.device)
        self.patterns = [pattern]
        self.test_cloze = [pet.encode_cloze(self.tok, self.test, pattern, self.labels, self.max_len)]
        untrained = self._scores(pet.PETModel(self.mlm, self.label_ids), self.test_cloze[0])
        scores["autoprompt_triggers"] = [self.tok.tokenizer.id_to_token(t) for t in pattern.triggers]
        scores["autoprompt_loss"] = history
        scores["zero_shot_accuracy"] = accuracy(self.test_cloze[0].targets, untrained.argmax(-1).tolist())
        self.log(f"seed {s}: AutoPrompt triggers {scores['autoprompt_triggers']} (training loss {history[0]:.4f} -> {history[-1]:.4f})")

    def _classifier(self) -> str:
        from attnkit.training.finetune import checkpoint_pooling

        if self.d.classifier == "auto" and checkpoint_pooling(self.source_dir) == "mean":
            return "mean"
        return self.d.classifier

    def _run_units(self, s: int, units: list, where: Path, main: bool, finish: Any) -> Any:
        self.pending[str(s)] = finish
        for name, model, task, cfg in units[:-1] if main else units:
            if isinstance(task, _LazyDistill):
                task = task.build()
            self.log(f"seed {s}: training {name} -> {where / name}")
            self._fit(model, task, cfg, where / name)
        if main:
            name, model, task, cfg = units[-1]
            if isinstance(task, _LazyDistill):
                task = task.build()
            self.log(f"seed {s}: training {name} -> OUT/model")
            return model, task, cfg
        finish(units[-1][1])
        return None

    def finish_seed(self, s: int, model: Any) -> dict[str, Any]:
        """Score seed ``s`` once its last model (``model``) has trained."""
        self.pending.pop(str(s))(model)
        return self.scores[s]

    # -- scores ------------------------------------------------------------------------------------
    def _score_patterns(self, models: list[Any], scores: dict[str, Any], *, final: bool) -> torch.Tensor:
        from attnkit.metrics import accuracy
        from attnkit.training.pet import ensemble_scores

        per = [self._scores(m, c) for m, c in zip(models, self.test_cloze_for_prompt())]
        for i, sc in enumerate(per):
            scores[f"pattern{i}_accuracy"] = accuracy(self.test_cloze[0].targets, sc.argmax(-1).tolist())
        ens = ensemble_scores(per, scores["ensemble_weights"])
        scores["ensemble_accuracy"] = accuracy(self.test_cloze[0].targets, ens.argmax(-1).tolist())
        if final:
            scores["accuracy"] = scores["ensemble_accuracy"]
        return ens

    def test_cloze_for_prompt(self) -> list[Any]:
        """The test rows of each pattern, cut to leave room for a soft prompt's virtual tokens."""
        if not self.prompt_len:
            return self.test_cloze
        return [self._cloze(self.test, p) for p in self.patterns]

    def _score_classifier(self, model: Any, scores: dict[str, Any], key: str) -> None:
        from attnkit.metrics import accuracy
        from attnkit.training import finetune as ft

        enc = ft.encode_classification(self.tok, self.test, self.labels, self.max_len)
        logits = ft.predict_logits(model.to(self.device).eval(), enc, pad_id=self.tok.pad_id, batch_size=self.d.eval_batch_size,
                                   device=self.device)
        scores[key] = accuracy(list(enc.targets), [int(x.argmax()) for x in logits])
        if self.d.method == "pet":
            scores["distilled_accuracy"] = scores[key]


class _LazyDistill:
    """The distillation task of a seed, built after its pattern models have trained (their ensemble labels the rows)."""

    def __init__(self, runs: SeedRuns, models: list[Any], scores: dict[str, Any], rows: Any, dev: Any, cfg: TrainConfig) -> None:
        self.runs, self.models, self.scores, self.rows, self.dev, self.cfg = runs, models, scores, rows, dev, cfg

    def build(self) -> Any:
        from attnkit.training import finetune as ft
        from attnkit.training import pet

        r = self.runs
        r._score_patterns(self.models, self.scores, final=False)
        per = [r._scores(m, r._cloze(self.rows, p)) for m, p in zip(self.models, r.patterns)]
        soft = pet.soft_labels(pet.ensemble_scores(per, self.scores["ensemble_weights"]), r.d.temperature)
        for m in self.models:
            m.to("cpu")  # the pattern models are done: free the device for the classifier
        rows = ft.encode_classification(r.tok, self.rows, r.labels, r.max_len)
        dev = ft.encode_classification(r.tok, self.dev, r.labels, r.max_len)
        r.log(f"distillation: {len(rows)} unlabelled rows with the ensemble's soft labels (T={r.d.temperature})")
        return pet.DistillTask(rows, soft, dev, batch_size=self.cfg.batch_size, pad_id=r.tok.pad_id,
                               eval_batch_size=r.d.eval_batch_size, device=r.device)


JOBS = {"fewshot": FewshotJob}

__all__ = ["FewshotDataConfig", "FewshotJob", "JOBS", "fewshot_train"]
