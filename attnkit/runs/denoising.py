"""The denoising pretraining jobs of the encoder-decoder Transformer: ``attnkit train t5|bart|mass``.

One job, three objectives (:mod:`attnkit.training.denoising`): T5's span corruption (Raffel et
al. 2020), BART's text infilling and sentence permutation (Lewis et al. 2020) and MASS's masked
fragment (Song et al. 2019). A joint subword vocabulary of ``data.vocab_size`` pieces is learned
from the text, and ``<mask>`` (BART, MASS) or ``data.n_sentinels`` sentinels ``<extra_id_0>``,
``<extra_id_1>``, ... (T5) are added after it; the model's vocabulary is set from it. The
saved model is an ordinary attnkit :class:`~attnkit.models.transformer.Transformer` with its
``tokenizer.json``: ``attnkit translate --model OUT/model`` decodes with it (a BART model fills
``<mask>`` in what it is given), and ``attnkit train translate`` can start from its weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from attnkit.config import Config, check
from attnkit.data.noising import BartNoiseConfig, MassConfig
from attnkit.data.span_corruption import SpanCorruptionConfig
from attnkit.errors import ConfigError, DataError
from attnkit.models.base import check_size
from attnkit.runs.base import Job, Log, Prepared
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig
from attnkit.training.loop import pick_device

MASK_TOKEN = "<mask>"


def sentinel(i: int) -> str:
    """The name of T5's ``i``-th sentinel token."""
    return f"<extra_id_{i}>"


@dataclass(frozen=True, kw_only=True)
class DenoisingDataConfig(Config):
    """The text and the noise of a denoising run.

    ``text``: UTF-8 files, gzipped where they end in ``.gz``; documents are blank-line-separated paragraphs
    (``documents="files"``: whole files; ``"lines"``: every line, as a corpus of single sentences), sentences
    are lines. ``max_src_len``: the encoder's length (T5: the corrupted inputs, EOS
    included, exactly, for every full run of raw tokens; BART and MASS: the most tokens of a run of
    sentences). ``vocab_size``: the learned subword vocabulary, before the added tokens.
    ``n_sentinels``: T5's sentinel tokens (100 in T5). The last ``valid_fraction`` of the documents are
    held out, at most ``max_valid`` examples of them. ``t5``, ``bart``, ``mass``: each objective's settings.
    """

    text: tuple[str, ...] = ()
    documents: Literal["paragraphs", "files", "lines"] = "paragraphs"
    max_documents: int = 0
    vocab_size: int = 8000
    max_src_len: int = 128
    n_sentinels: int = 100
    valid_fraction: float = 0.05
    max_valid: int = 256
    t5: SpanCorruptionConfig = field(default_factory=SpanCorruptionConfig)
    bart: BartNoiseConfig = field(default_factory=BartNoiseConfig)
    mass: MassConfig = field(default_factory=MassConfig)

    def validate(self) -> None:
        check(self.max_documents >= 0, "max_documents", self.max_documents, "must be >= 0 (0: every document)")
        check(self.max_src_len >= 8, "max_src_len", self.max_src_len, "must be at least 8")
        check(self.n_sentinels >= 1, "n_sentinels", self.n_sentinels, "must be at least 1")
        check(0.0 < self.valid_fraction < 1.0, "valid_fraction", self.valid_fraction, "must be in (0, 1)")
        check(self.max_valid >= 1, "max_valid", self.max_valid, "must be >= 1")


def read_texts(paths: list[str], documents: str) -> list[list[str]]:
    """The documents of ``paths`` (each a list of sentences); ``.gz`` files are decompressed.

    Raises:
        DataError: a file is missing, not gzip or UTF-8, or no file holds text.
    """
    import re

    from attnkit.data.pretraining import split_sentences
    from attnkit.data.text import read_text_file

    docs: list[list[str]] = []
    for path in map(Path, paths):
        text = read_text_file(path)
        if documents == "lines":
            docs.extend([line.strip()] for line in text.splitlines() if line.strip())
        else:
            parts = [text] if documents == "files" else re.split(r"\n[ \t\r\f\v]*\n", text)
            docs.extend(doc for doc in (split_sentences(part) for part in parts) if doc)
    if not docs:
        raise DataError(f"{', '.join(paths)} hold no text; denoising pretraining needs text")
    return docs


def default_train() -> TrainConfig:
    """AdamW (0.9, 0.999), lr 5e-4, weight decay 0.01, 100 warm-up steps then linear decay, clipping 1.0; 2,000 steps of 32."""
    return TrainConfig(
        steps=2000, batch_size=32, log_every=50,
        optim=OptimConfig(name="adamw", lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, clip_norm=1.0),
        schedule=ScheduleConfig(kind="linear", warmup=100), eval=EvalConfig(every=200), reg=RegularizationConfig(label_smoothing=0.0),
    )


class DenoisingJob(Job):
    """``attnkit train t5|bart|mass``: pretrain an encoder-decoder Transformer by denoising text; the best model by held-out loss is saved."""

    summary = "encoder-decoder Transformer pretrained by denoising text"
    metrics = ("loss",)

    def __init__(self, objective: str) -> None:
        from attnkit.models.transformer import TransformerConfig

        self.task = objective
        self.config_types = {"model": TransformerConfig, "train": TrainConfig, "data": DenoisingDataConfig}

    def defaults(self) -> dict[str, Config]:
        from attnkit.models.transformer import preset

        return {"model": preset("transformer-small", norm_position="pre", max_len=512), "train": default_train(),
                "data": DenoisingDataConfig()}

    def check(self, configs: dict[str, Config]) -> None:
        m, d = configs["model"], configs["data"]
        if not d.text:  # type: ignore[attr-defined]
            raise ConfigError(f"attnkit train {self.task} needs --text FILE (UTF-8 text), or --recipe with --data-root")
        if d.max_src_len > m.max_len:  # type: ignore[attr-defined]
            raise ConfigError(f"data.max_src_len={d.max_src_len} is longer than the model's {m.max_len} positions")  # type: ignore[attr-defined]
        if self.task == "t5":
            from attnkit.data.span_corruption import noise_counts, t5_lengths

            raw, _ = t5_lengths(d.max_src_len, d.t5.noise_density, d.t5.mean_noise_span_length)  # type: ignore[attr-defined]
            spans = noise_counts(raw, d.t5.noise_density, d.t5.mean_noise_span_length)[1]  # type: ignore[attr-defined]
            if spans > d.n_sentinels:  # type: ignore[attr-defined]
                raise ConfigError(f"data.n_sentinels={d.n_sentinels} is fewer than the {spans} noise spans of a run of {raw} tokens")  # type: ignore[attr-defined]

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.data.subword import encode_lines, train_subword_tokenizer
        from attnkit.data.tokenizer import EOS_ID, load_tokenizer
        from attnkit.models.transformer import Transformer
        from attnkit.training.denoising import DenoisingTask, noise_function, sentence_runs, stream_runs

        t, d, m = configs["train"], configs["data"], configs["model"]
        texts = read_texts(list(d.text), d.documents)  # type: ignore[attr-defined]
        if d.max_documents:  # type: ignore[attr-defined]
            texts = texts[: d.max_documents]  # type: ignore[attr-defined]
        if len(texts) < 2:
            raise DataError("denoising pretraining needs at least two documents (one is held out); separate them by blank lines")
        if resume:
            tok = load_tokenizer(out / "tokenizer.json")
        else:
            tok = train_subword_tokenizer([s for doc in texts for s in doc], d.vocab_size, what="data.vocab_size")  # type: ignore[attr-defined]
            added = [sentinel(i) for i in range(d.n_sentinels)] if self.task == "t5" else [MASK_TOKEN]  # type: ignore[attr-defined]
            tok.add_special_tokens(added)
            out.mkdir(parents=True, exist_ok=True)
            tok.save(str(out / "tokenizer.json"))
        vocab = tok.get_vocab_size()
        m = m.replace(src_vocab_size=vocab, tgt_vocab_size=vocab)  # type: ignore[attr-defined]
        docs = [[ids for ids in encode_lines(tok, doc) if ids] for doc in texts]
        n_valid = max(1, round(d.valid_fraction * len(docs)))  # type: ignore[attr-defined]
        if self.task == "t5":
            from attnkit.data.span_corruption import t5_lengths

            raw, targets = t5_lengths(d.max_src_len, d.t5.noise_density, d.t5.mean_noise_span_length)  # type: ignore[attr-defined]
            train, valid = stream_runs(docs[:-n_valid], raw), stream_runs(docs[-n_valid:], raw)
            shape = f"runs of {raw} tokens -> {d.max_src_len} inputs and {targets} targets"  # type: ignore[attr-defined]
        else:
            budget = d.max_src_len - 1  # type: ignore[attr-defined]
            train, valid = sentence_runs(docs[:-n_valid], budget), sentence_runs(docs[-n_valid:], budget)
            shape = f"runs of whole sentences of at most {budget} tokens"
        if not train or not valid:
            raise DataError(f"the text gives {len(train)} training and {len(valid)} held-out examples; add text "
                            "(or raise data.valid_fraction)")
        valid = valid[: d.max_valid]  # type: ignore[attr-defined]
        noise = noise_function(self.task, d, mask_id=tok.token_to_id(MASK_TOKEN) or 0,  # type: ignore[arg-type]
                               sentinel_ids=[tok.token_to_id(sentinel(i)) for i in range(d.n_sentinels)] if self.task == "t5" else [],  # type: ignore[attr-defined]
                               eos_id=EOS_ID, max_len=d.max_src_len)  # type: ignore[attr-defined]
        device = pick_device(t.device)  # type: ignore[attr-defined]
        check_size(Transformer, m, device, copies=4)  # before any weight is allocated
        task = DenoisingTask(train, valid, noise, batch_size=t.batch_size, label_smoothing=t.reg.label_smoothing, device=device)  # type: ignore[attr-defined]
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]
        model = Transformer(m)
        log(f"{self.task}: {len(docs):,} documents ({n_valid:,} held out), {len(train):,} training and {len(valid):,} held-out "
            f"examples ({shape}); vocabulary {vocab:,}; {model.num_parameters() / 1e6:.2f}M parameters on {device}")
        return Prepared(model=model, task=task, configs={**configs, "model": m}, tokenizer=tok)


JOBS = {name: (lambda name=name: DenoisingJob(name)) for name in ("t5", "bart", "mass")}


def load_init(path: str, out: Path) -> tuple[Any, Any]:
    """The encoder-decoder model and tokenizer in ``path`` to start a translation run from; the tokenizer is saved in ``out``.

    Raises:
        CheckpointError: ``path`` holds no encoder-decoder Transformer, or a tokenizer made for another model.
    """
    import attnkit
    from attnkit.data.tokenizer import check_against_model, check_specials, load_tokenizer
    from attnkit.errors import CheckpointError
    from attnkit.models.transformer import Transformer

    model = attnkit.load(path)
    if not isinstance(model, Transformer):
        raise CheckpointError(f"data.init={path} holds a {type(model).__name__}; translation starts from an encoder-decoder Transformer")
    tok = load_tokenizer(path)
    check_specials(tok)
    check_against_model(tok, model.config, f"{path}/tokenizer.json")
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    return model, tok


def adopt_architecture(init: Any, asked: Any) -> Any:
    """``init``'s architecture with the run's regularisation: dropout, activation dropout and the attention's dropout and kernel parameters."""
    return init.replace(dropout=asked.dropout, activation_dropout=asked.activation_dropout,
                        attention=init.attention.replace(dropout=asked.attention.dropout, params=asked.attention.params))
