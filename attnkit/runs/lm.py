"""The GPT language-model job: ``attnkit train lm`` on one text file.

Radford et al. 2019: a decoder-only Transformer trained on next-token prediction. The text is
tokenized character by character or with a byte-level BPE learned from it (section 2.2); the
first 90% of the tokens train and the last 10% validate (as nanoGPT splits tiny Shakespeare).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.models.base import check_size
from attnkit.peft.method import PEFTConfig
from attnkit.runs.base import Job, Log, Prepared
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig
from attnkit.training.loop import pick_device

# the model keys a run continuing data.model may take from its own model config (data.adjust): none changes a weight
ADJUSTABLE = ("context", "dropout", "attention.dropout", "attention.position.scaling", "attention.position.factor",
              "attention.position.original_max_len")


@dataclass(frozen=True, kw_only=True)
class TextDataConfig(Config):
    """The text a language model learns.

    ``text`` is a UTF-8 file; ``tokenizer`` is ``char`` (one token per character) or ``bpe``
    (a byte-level BPE of ``vocab_size`` tokens learned from the text); ``train_fraction`` of the
    tokens train, the rest validate. At each evaluation ``sample_tokens`` tokens of text are
    sampled (temperature 0.8, top-k 200, fixed seed) and printed (0: none).

    ``model``, when given, is a GPT directory (attnkit, or Hugging Face GPT-2 with its
    ``tokenizer.json``) to go on training on ``text`` with its own architecture and tokenizer
    (the ``model`` config and ``tokenizer`` are then unused); with a ``peft`` method only an adapter trains.
    ``adjust`` names keys of the ``model`` config (of :data:`ADJUSTABLE`, none of which changes a weight)
    that replace the continued model's own: ``context`` trains it on longer windows, and
    ``attention.position.scaling``, ``factor`` and ``original_max_len`` rescale its rotary positions,
    as YaRN is fine-tuned at a longer context (Peng et al. 2023, section 4).

    ``tokens`` instead of ``text`` is a token file written by ``attnkit data prepare``
    (:mod:`attnkit.data.stream`): the model trains on random windows read from it as needed, so
    the corpus may exceed the memory; its tokenizer is the one the file names (``tokenizer`` and
    ``vocab_size`` are then unused), and its last ``1 - train_fraction`` validates.

    ``segment`` > 0 trains on consecutive segments of that many tokens, the batch of each step
    continuing the rows of the one before, with Transformer-XL memory (Dai et al. 2019) of
    ``mem_len`` positions per layer carried between them (:mod:`attnkit.data.segments`; 0: none);
    ``mem_len + segment`` keys must fit ``model.context``. Evaluation reads the validation part
    the same way: ``loss`` with a memory of ``eval_mem_len`` (null: ``mem_len``), ``loss_no_memory``
    without one.

    ``unknown``: what becomes of characters a continued model's character-level vocabulary lacks:
    ``error`` names them, ``unk`` reads each as ``<unk>``.
    """

    text: str = ""
    model: str = ""
    tokens: str = ""
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = 4096
    train_fraction: float = 0.9
    sample_tokens: int = 200
    segment: int = 0
    mem_len: int = 0
    eval_mem_len: int | None = None
    unknown: Literal["error", "unk"] = "error"
    adjust: tuple[str, ...] = ()

    def validate(self) -> None:
        check(self.vocab_size >= 260, "vocab_size", self.vocab_size, "must be >= 260 (256 bytes plus specials)")
        check(0.0 < self.train_fraction < 1.0, "train_fraction", self.train_fraction, "must be in (0, 1)")
        check(self.sample_tokens >= 0, "sample_tokens", self.sample_tokens, "must be >= 0 (0: no samples)")
        check(self.segment >= 0 and self.mem_len >= 0, "mem_len", self.mem_len, "and segment must be >= 0")
        check(self.segment > 0 or (self.mem_len == 0 and self.eval_mem_len is None), "segment", self.segment,
              "must be positive for a memory (data.mem_len, data.eval_mem_len)")
        for key in self.adjust:
            check(key in ADJUSTABLE, "adjust", list(self.adjust), f"may name only {', '.join(ADJUSTABLE)} (got {key!r})")
        check(not self.adjust or bool(self.model), "adjust", list(self.adjust), "applies to a continued model; set data.model")


def adjusted(config: Any, asked: Any, keys: tuple[str, ...], source: str) -> Any:
    """The continued model's ``config`` with the ``keys`` (dotted, of :data:`ADJUSTABLE`) of ``asked``, the run's model config.

    Raises:
        ConfigError: ``context`` changes on a model with learned positions (their table has ``context`` rows).
    """
    data, wanted = config.to_dict(), asked.to_dict()
    for key in keys:
        *path, last = key.split(".")
        into, take = data, wanted
        for part in path:
            into, take = into[part], take[part]
        into[last] = take[last]
    out = type(config).from_dict(data, prefix="model.")
    if config.learned_positions and out.context != config.context:
        raise ConfigError(f"data.adjust names context, but {source} has learned positions ({config.context} rows); "
                          "its context cannot change")
    return out


def _get(config: Any, key: str) -> Any:
    """The value at a dotted ``key`` of ``config``."""
    for part in key.split("."):
        config = getattr(config, part)
    return config


def make_sampler(tok: Any, n_tokens: int, context: int) -> Any:
    """``model -> text``: a fixed-seed sample continuing a newline (or the first ordinary token)."""
    from attnkit.generation.sampling import SamplingConfig, generate

    start = tok.token_to_id("\n")
    if start is None:
        start = tok.encode("\n").ids[0] if tok.encode("\n").ids else 4
    cfg = SamplingConfig(max_new_tokens=max(1, min(n_tokens, context - 1)), temperature=0.8, top_k=200, seed=0)

    def sample(model: Any) -> str:
        out = generate(model, [[start]], cfg, decode=tok.decode)
        return "--- sample ---\n" + (out.texts[0] if out.texts else "") + "\n--------------"

    return sample


def loss_chunk(train: Config) -> int:
    """Tokens per chunk of the chunked output layer and loss (``train.execution.chunked_loss``), 0 for the plain loss."""
    ex = train.execution  # type: ignore[attr-defined]
    return ex.loss_chunk if ex.chunked_loss else 0


class LMJob(Job):
    """``attnkit train lm``: a GPT on a text file; the best model by validation loss is saved."""

    task = "lm"
    summary = "GPT language model on a text file"
    metrics = ("loss",)
    safe_on_resume = ("data.sample_tokens",)

    def __init__(self) -> None:
        from attnkit.models.gpt import GPTConfig

        self.config_types = {"model": GPTConfig, "train": TrainConfig, "data": TextDataConfig, "peft": PEFTConfig}

    def defaults(self) -> dict[str, Config]:
        from attnkit.models.gpt import gpt_preset

        # nanoGPT's char-level Shakespeare baseline: AdamW(0.9, 0.99), lr 1e-3, 100 warm-up steps then
        # cosine decay to lr/10, weight decay 0.1, batch 64, clipping 1.0
        return {
            "model": gpt_preset("char-shakespeare"),
            "train": TrainConfig(
                steps=5000, batch_size=64, log_every=50,
                optim=OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, clip_norm=1.0),
                schedule=ScheduleConfig(kind="cosine", warmup=100, min_lr_ratio=0.1),
                eval=EvalConfig(every=250), reg=RegularizationConfig(label_smoothing=0.0),
            ),
            "data": TextDataConfig(),
            "peft": PEFTConfig(),
        }

    def check(self, configs: dict[str, Config]) -> None:
        d = configs["data"]
        if not d.text and not d.tokens:  # type: ignore[attr-defined]
            raise ConfigError("attnkit train lm needs --text FILE (a UTF-8 text file), or --recipe with --data-root, "
                              "or --set data.tokens=FILE (attnkit data prepare)")
        if d.tokens and configs["train"].execution.cuda_graphs:  # type: ignore[attr-defined]
            raise ConfigError("data.tokens reads each batch from the file inside the training step, which a step recorded as a "
                              "CUDA graph cannot replay; set train.execution.cuda_graphs=false")
        if d.tokens and (d.model or configs["peft"].enabled):  # type: ignore[attr-defined]
            raise ConfigError("data.tokens trains a new GPT on the token file; continuing a model (data.model, --peft) reads --text")
        if configs["train"].execution.chunked_loss and (d.segment or configs["peft"].enabled):  # type: ignore[attr-defined]
            raise ConfigError("train.execution.chunked_loss applies to a GPT's own output layer on plain windows; "
                              "it excludes data.segment and --peft")
        if d.segment:  # type: ignore[attr-defined]
            from attnkit.data.segments import check_memory

            check_memory(configs["model"], configs["train"], d)  # type: ignore[arg-type]

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.data.lm import LMTask
        from attnkit.data.text import encode, read_text, split_tokens, text_tokenizer
        from attnkit.data.tokenizer import load_tokenizer
        from attnkit.models.gpt import GPT

        t, d = configs["train"], configs["data"]
        if d.tokens:  # type: ignore[attr-defined]
            return self._prepare_stream(configs, out, resume=resume, log=log)
        text = read_text(d.text)  # type: ignore[attr-defined]
        if d.model:  # type: ignore[attr-defined]
            return self._prepare_pretrained(configs, text, out, resume=resume, log=log)
        if resume:
            tok = load_tokenizer(out / "tokenizer.json")
        else:
            tok = text_tokenizer(text, d.tokenizer, d.vocab_size)  # type: ignore[attr-defined]
            out.mkdir(parents=True, exist_ok=True)
            tok.save(str(out / "tokenizer.json"))
        m = configs["model"].replace(vocab_size=tok.get_vocab_size())
        train, valid = split_tokens(encode(tok, text), m.context, d.train_fraction)  # type: ignore[attr-defined]
        device = pick_device(t.device)  # type: ignore[attr-defined]
        check_size(GPT, m, device, copies=4)  # before any weight is allocated
        sample = make_sampler(tok, d.sample_tokens, m.context) if d.sample_tokens > 0 else None  # type: ignore[attr-defined]
        task = LMTask(train, valid, context=m.context, batch_size=t.batch_size, device=device, sample=sample, log=log,  # type: ignore[attr-defined]
                      loss_chunk=loss_chunk(t))
        if d.segment:  # type: ignore[attr-defined]  # Transformer-XL: consecutive segments with memory
            from attnkit.data.segments import XLLMTask

            task = XLLMTask(train, valid, segment=d.segment, mem_len=d.mem_len, eval_mem_len=d.eval_mem_len,  # type: ignore[attr-defined,assignment]
                            batch_size=t.batch_size, device=device, sample=sample, log=log)  # type: ignore[attr-defined]
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]  # the initial weights are part of a reproducible run
        model = GPT(m)
        log(f"{len(train):,} training and {len(valid):,} validation tokens; vocabulary {tok.get_vocab_size()} ({d.tokenizer}); "  # type: ignore[attr-defined]
            f"{model.num_parameters() / 1e6:.2f}M parameters on {device}")
        return Prepared(model=model, task=task, configs={**configs, "model": m}, tokenizer=tok)

    def _prepare_pretrained(self, configs: dict[str, Config], text: str, out: Path, *, resume: bool, log: Log) -> Prepared:
        """``data.model``: a trained GPT and its tokenizer, trained further on ``text`` (in full, or an adapter)."""
        from attnkit.data.lm import LMTask
        from attnkit.data.text import encode, split_tokens
        from attnkit.data.tokenizer import check_against_model, load_tokenizer
        from attnkit.loading import load
        from attnkit.models.base import load_state_strict
        from attnkit.models.gpt import GPT
        from attnkit.runs.base import model_dir

        t, d, p = configs["train"], configs["data"], configs.get("peft", PEFTConfig())
        source = model_dir(d.model)  # type: ignore[attr-defined]
        model = load(source)
        if not isinstance(model, GPT):
            raise ConfigError(f"data.model={d.model}: holds a {type(model).__name__}; train lm continues a GPT")  # type: ignore[attr-defined]
        tok = load_tokenizer(out / "tokenizer.json" if resume else source)
        check_against_model(tok, model.config, str(source / "tokenizer.json"))
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            tok.save(str(out / "tokenizer.json"))
        m = model.config
        if d.adjust:  # type: ignore[attr-defined]  # the same weights in a model of the adjusted settings
            m = adjusted(model.config, configs["model"], d.adjust, str(source))  # type: ignore[attr-defined]
            if m != model.config:
                changed = GPT(m)
                load_state_strict(changed, model.state_dict(), str(source))
                model = changed
                log("adjusted: " + ", ".join(f"model.{k}={_get(m, k)!r}" for k in d.adjust))  # type: ignore[attr-defined]
        train, valid = split_tokens(encode(tok, text, unknown=d.unknown), m.context, d.train_fraction)  # type: ignore[attr-defined]
        device = pick_device(t.device)  # type: ignore[attr-defined]
        sample = make_sampler(tok, d.sample_tokens, m.context) if d.sample_tokens > 0 else None  # type: ignore[attr-defined]
        if p.method in ("prompt", "ptuning") and sample is not None:  # type: ignore[attr-defined]
            log("samples off: soft prompts do not support cached decoding")
            sample = None
        task = LMTask(train, valid, context=m.context, batch_size=t.batch_size, device=device, sample=sample, log=log,  # type: ignore[attr-defined]
                      loss_chunk=loss_chunk(t))
        state: dict[str, Any] = {}
        if p.enabled:  # type: ignore[attr-defined]
            from attnkit.runs.finetune import adapt

            state["peft"] = adapt(model, p, source, tok, log)  # type: ignore[arg-type]
        log(f"{len(train):,} training and {len(valid):,} validation tokens; continuing {source} "
            f"({model.num_parameters() / 1e6:.2f}M parameters) on {device}")
        from attnkit.runs.mlm import _start_eval

        # the continued model's validation loss on the new text before any step: OUT/start_eval.json, start_loss in eval.json
        return Prepared(model=model, task=task, configs={**configs, "model": m}, tokenizer=tok, state=state,
                        before_fit=None if resume else _start_eval(model, task, out, log))

    def finish(self, prepared: Prepared, trainer: Any, result: Any, out: Path, log: Log) -> dict[str, Any]:
        import json

        from attnkit.attention.adaptive_span import spans

        start = json.loads((out / "start_eval.json").read_text()) if (out / "start_eval.json").is_file() else {}
        return {**super().finish(prepared, trainer, result, out, log), **prepared.state.get("peft", {}), **spans(prepared.model),
                **({"start_loss": start["loss"]} if "loss" in start else {})}

    def _prepare_stream(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        """``data.tokens``: the memory-mapped token file and the tokenizer it was written with."""
        import shutil

        from attnkit.data.stream import StreamLMTask, TokenFile
        from attnkit.data.tokenizer import load_tokenizer
        from attnkit.models.gpt import GPT

        t, d = configs["train"], configs["data"]
        file = TokenFile(d.tokens)  # type: ignore[attr-defined]
        source = out / "tokenizer.json" if resume else Path(file.header["tokenizer"])
        file.check_tokenizer(source)
        tok = load_tokenizer(source)
        if not resume:
            out.mkdir(parents=True, exist_ok=True)
            if source.resolve() != (out / "tokenizer.json").resolve():
                shutil.copyfile(source, out / "tokenizer.json")
        m = configs["model"].replace(vocab_size=tok.get_vocab_size())
        device = pick_device(t.device)  # type: ignore[attr-defined]
        check_size(GPT, m, device, copies=4)
        sample = make_sampler(tok, d.sample_tokens, m.context) if d.sample_tokens > 0 else None  # type: ignore[attr-defined]
        task = StreamLMTask(file, context=m.context, batch_size=t.batch_size, train_fraction=d.train_fraction,  # type: ignore[attr-defined]
                            device=device, sample=sample, log=log, loss_chunk=loss_chunk(t))
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]
        model = GPT(m)
        log(f"{task.split:,} training and {len(file) - task.split:,} validation tokens in {file.path}; vocabulary "
            f"{tok.get_vocab_size()}; {model.num_parameters() / 1e6:.2f}M parameters on {device}")
        return Prepared(model=model, task=task, configs={**configs, "model": m}, tokenizer=tok)
