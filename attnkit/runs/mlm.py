"""The BERT pretraining job: ``attnkit train mlm``, from scratch or continued from a published encoder.

Devlin et al. 2019 (section 3.1, appendix A.2): masked LM on packed ``[CLS] A [SEP] B [SEP]``
sequences, optionally with next-sentence prediction (BERT) or sentence-order prediction
(ALBERT, Lan et al. 2020, section 4.1); without a pair task, masked LM alone on full-sentence
sequences (RoBERTa, Liu et al. 2019, section 4.2). The data layout and the task are
:mod:`attnkit.data.pretraining` and :mod:`attnkit.training.mlm`.

From scratch (``data.model`` unset) a WordPiece vocabulary of ``data.vocab_size`` tokens is
learned from the text unless ``data.tokenizer`` names one, and the model's vocabulary size and
[PAD] id are set from it.

Continued pretraining (``data.model`` set) is task-adaptive pretraining (TAPT) of Gururangan et
al. 2020, "Don't Stop Pretraining", section 4: the encoder of an attnkit or Hugging Face
BERT-family directory (or the packaged all-MiniLM-L6-v2) keeps training with masked LM on a
task's own unlabelled text. Its encoder is copied strictly into the pretraining model, and so
are its masked-LM head and pair classifier where it has them (:func:`init_from`). The
architecture and the tokenizer are the checkpoint's: only ``model.dropout`` and
``model.attention.dropout`` may change. With ``train.schedule.warmup=0`` the warm-up is
``data.warmup_fraction`` of the steps (the paper's 6%). The held-out loss of the loaded weights
is written to ``OUT/start_eval.json`` before training, and a sentence-transformers checkpoint's
pooling is copied into ``OUT/model`` so that fine-tuning pools as the source was trained.

A text file ending in ``.tsv`` (a GLUE file: both sentences of each row) or ``.conll`` (the words
of each sentence joined by spaces) is read as one sentence a line with a document break after
every :data:`TASK_DOC_SENTENCES` sentences: the unlabelled text of a task's training file. A
``.json`` file is a SQuAD v1.1 file (:mod:`attnkit.data.squad_text`): one document per paragraph,
its context's sentences then its questions (``data.squad_questions``), without the last
``data.squad_heldout_articles`` articles, those a reading-comprehension recipe with
``split_articles`` of that many evaluates on.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnkit.config import Config, check
from attnkit.data.pretraining import PairTask, PretrainingDataConfig
from attnkit.data.segment import Segmenter
from attnkit.errors import CheckpointError, ConfigError, DataError
from attnkit.io import atomic_write_text
from attnkit.models.base import check_size
from attnkit.models.bert import BertModel
from attnkit.runs.base import Job, Log, Prepared, model_dir
from attnkit.training.config import EvalConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig
from attnkit.training.loop import TrainResult, Trainer, pick_device

DEFAULT_PRESET, DEFAULT_VOCAB_SIZE = "bert-tiny", 8000
ADJUSTABLE = ("dropout", "attention.dropout")  # the model keys that may change when continuing from data.model
TASK_SUFFIXES = (".tsv", ".conll")  # task files: read as one sentence a line
SQUAD_SUFFIX = ".json"  # a SQuAD v1.1 file: its passages and questions (attnkit.data.squad_text)
TASK_DOC_SENTENCES = 50  # sentences per document of a task file


@dataclass(frozen=True, kw_only=True)
class MLMDataConfig(PretrainingDataConfig):
    """The text, the tokenizer and the model a pretraining run starts from, and how documents become sequences.

    ``text``: UTF-8 text files, gzipped where the name ends in ``.gz`` (documents are blank-line-separated
    paragraphs, or whole files with ``documents="files"``; sentences are lines, or lines cut after ``.!?`` with ``sentences="punct"``),
    or task files (``.tsv``, ``.conll``; ``.json``: SQuAD v1.1, its contexts and, with ``squad_questions``,
    its questions, less its last ``squad_heldout_articles`` articles). ``model``: continue pretraining
    this model directory or packaged model (None: a fresh model). ``tokenizer``: a ``tokenizer.json``
    or ``vocab.txt`` (default: the model's, else a WordPiece of ``vocab_size`` tokens learned from the
    text, lower-cased unless ``cased``). ``pair_task``: ``none`` (masked LM alone), ``nsp``, ``sop`` or ``sso`` (StructBERT's sentence structural objective). ``max_documents``: read
    at most this many documents (0: all). ``warmup_fraction``: continuing from ``model`` with
    ``train.schedule.warmup=0``, the warm-up is this fraction of ``train.steps``. ``squad_questions``
    / ``squad_heldout_articles``: see :mod:`attnkit.data.squad_text`. ``segmenter``: where words begin for
    whole-word and span masking in text without spaces (``jieba``, or ``spaces`` for pre-segmented text; Chinese
    whole-word masking, :mod:`attnkit.data.segment`); ``none``: the tokenizer's own words. ``phrases``: a file of one
    phrase or entity a line, each occurrence one unit for whole-word and span masking (ERNIE's phrase and entity masking),
    or ``auto``: the phrases that Mikolov et al.'s collocation score finds in the text above ``phrase_threshold``
    (:mod:`attnkit.data.phrases`), written to ``OUT/phrases.txt``. ``entity_tagger``: a tagger from ``attnkit
    finetune ner`` whose entities in the text become units as well (ERNIE's entity-level masking), written to
    ``OUT/entities.txt`` (:mod:`attnkit.runs.lexicon`).

    ``tokens`` instead of ``text`` is a token file written by ``attnkit data prepare`` with a
    WordPiece ``tokenizer.json`` (:mod:`attnkit.data.stream_mlm`): masked LM alone on random
    ``[CLS] window [SEP]`` rows of ``max_seq_len`` read from it as needed, so the corpus may exceed
    the memory; the tokenizer is the one the file names, and its last ``valid_fraction`` validates.
    """

    text: tuple[str, ...] = ()
    tokens: str = ""
    model: str | None = None
    tokenizer: str | None = None
    vocab_size: int | None = None
    cased: bool = False
    pair_task: PairTask = "none"
    max_documents: int = 0
    warmup_fraction: float = 0.06
    squad_questions: bool = True
    squad_heldout_articles: int = 0
    segmenter: Segmenter = "none"
    phrases: str | None = None
    phrase_threshold: float = 10.0
    entity_tagger: str | None = None

    def validate(self) -> None:
        super().validate()
        check(self.phrase_threshold > 0, "phrase_threshold", self.phrase_threshold, "must be positive (times more often than chance)")
        check(self.squad_heldout_articles >= 0, "squad_heldout_articles", self.squad_heldout_articles,
              "must be >= 0 (the last articles of a SQuAD .json text file left out)")
        check(self.vocab_size is None or self.vocab_size > 5, "vocab_size", self.vocab_size,
              "must exceed the 5 special tokens (or be null: 8000)")
        check(self.max_documents >= 0, "max_documents", self.max_documents, "must be >= 0 (0: every document)")
        check(0.0 <= self.warmup_fraction < 1.0, "warmup_fraction", self.warmup_fraction, "must be in [0, 1)")


def scratch_train() -> TrainConfig:
    """BERT's recipe (appendix A.2: AdamW, betas (0.9, 0.999), weight decay 0.01, warm-up then linear decay)
    with a learning rate and length for small models: lr 5e-4, 2,000 steps of 32 sequences, 100 warm-up steps."""
    return TrainConfig(
        steps=2000, batch_size=32, log_every=50,
        optim=OptimConfig(name="adamw", lr=5e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, clip_norm=1.0),
        schedule=ScheduleConfig(kind="linear", warmup=100), eval=EvalConfig(every=200), reg=RegularizationConfig(label_smoothing=0.0),
    )


def continued_train() -> TrainConfig:
    """:func:`scratch_train` with TAPT's learning rate, 1e-4 (Gururangan et al. 2020, appendix B); the warm-up
    (``warmup=0`` here) becomes ``data.warmup_fraction`` of the steps when the run starts."""
    t = scratch_train()
    return t.replace(optim=t.optim.replace(lr=1e-4), schedule=t.schedule.replace(warmup=0))


# -- reading the text -----------------------------------------------------------------------------
def task_sentences(path: Path) -> list[str]:
    """The sentences of a task's training file, one string each: both sentences of a GLUE ``.tsv`` row in
    order, or a CoNLL sentence's words joined by spaces; white space collapsed, empty ones dropped."""
    if path.suffix == ".tsv":
        from attnkit.data.glue import read_classification_tsv

        d = read_classification_tsv(path)
        rows = [t for i, text in enumerate(d.texts) for t in ((text, d.pairs[i]) if d.pairs is not None else (text,))]
    else:
        from attnkit.data.conll import read_conll

        rows = [" ".join(words) for words in read_conll(path).tokens]
    return [" ".join(r.split()) for r in rows if r.strip()]


def read_text(d: MLMDataConfig) -> list[list[str]]:
    """The documents of ``d.text``, each a list of sentences (at most ``d.max_documents``).

    Raises:
        DataError: a file is missing, not UTF-8, or holds no text.
    """
    from attnkit.data.pretraining import read_documents, split_sentences
    from attnkit.data.squad_text import squad_documents

    docs: list[list[str]] = []
    for path in map(Path, d.text):
        if path.suffix == SQUAD_SUFFIX:
            docs.extend(squad_documents(path, questions=d.squad_questions, heldout_articles=d.squad_heldout_articles))
            continue
        if path.suffix not in TASK_SUFFIXES:
            docs.extend(read_documents([path], documents=d.documents, sentences=d.sentences))
            continue
        sentences = task_sentences(path)
        if not sentences:
            raise DataError(f"{path} holds no sentences; masked-LM pretraining needs text")
        chunks = ("\n".join(sentences[i : i + TASK_DOC_SENTENCES]) for i in range(0, len(sentences), TASK_DOC_SENTENCES))
        docs.extend(doc for doc in (split_sentences(c, d.sentences) for c in chunks) if doc)
    return docs[: d.max_documents] if d.max_documents else docs


def learn_tokenizer(docs: list[list[str]], vocab_size: int, *, cased: bool) -> Any:
    """A WordPiece vocabulary learned from the sentences that will be trained on."""
    from attnkit.data.tokenizer import check_vocab_size
    from attnkit.data.wordpiece import WordPieceTokenizer

    check_vocab_size(vocab_size, what="data.vocab_size")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "text.txt"
        path.write_text("\n".join(s for doc in docs for s in doc) + "\n", encoding="utf-8")
        return WordPieceTokenizer.train([path], vocab_size, lowercase=not cased)


# -- the model continued from ---------------------------------------------------------------------
def load_encoder_source(path: Path) -> tuple[Any, Any]:
    """``(model, encoder)`` of a checkpoint directory: ``attnkit.load(path)`` and the BERT encoder inside it."""
    import attnkit
    from attnkit.training.finetune import encoder_of

    source = attnkit.load(path)
    try:
        return source, encoder_of(source)
    except CheckpointError:
        raise CheckpointError(f"{path} holds a {type(source).__name__}, not a BERT-family encoder; "
                              "continued masked-LM pretraining needs one") from None


def init_from(model: Any, source: Any, path: Path) -> list[str]:
    """Copy ``source``'s weights into the :class:`~attnkit.models.bert_pretraining.BertPretraining` ``model``:
    its encoder always (strictly), its masked-LM head, sentence-pair classifier and span boundary head where it has them.

    Returns:
        The parts of ``model`` left as initialised (``"masked-LM head"``, ``"nsp classifier"``).
    """
    from attnkit.models.base import load_state_strict
    from attnkit.models.bert_heads import BertMLM
    from attnkit.models.bert_pretraining import BertPretraining
    from attnkit.training.finetune import encoder_of

    load_state_strict(model.bert, encoder_of(source).state_dict(), f"{path} (its encoder)")
    mlm = source.mlm if isinstance(source, BertPretraining) else source if isinstance(source, BertMLM) else None
    pair = source.pair if isinstance(source, BertPretraining) and source.config.pair_task == model.config.pair_task else None
    fresh = []
    if mlm is not None:
        load_state_strict(model.mlm, mlm.state_dict(), f"{path} (its masked-LM head)")
    else:
        fresh.append("masked-LM head")
    if model.pair is not None:
        if pair is not None:
            load_state_strict(model.pair, pair.state_dict(), f"{path} (its {model.config.pair_task} classifier)")
        else:
            fresh.append(f"{model.config.pair_task} classifier")
    if model.sbo is not None:
        sbo = source.sbo if isinstance(source, BertPretraining) else None
        if sbo is not None:
            load_state_strict(model.sbo, sbo.state_dict(), f"{path} (its span boundary head)")
        else:
            fresh.append("span boundary head")
    return fresh


def carry_pooling(source: Path, target: Path) -> str | None:
    """Copy a sentence-transformers checkpoint's pooling (``modules.json`` reduced to its Pooling
    modules, and their ``config.json``) into ``target``, so fine-tuning pools as the source was
    trained; returns the pooling (``"mean"``, ``"cls"``) or None when ``source`` has none."""
    from attnkit.training.finetune import checkpoint_pooling

    pooling = checkpoint_pooling(source)
    if pooling is None or not target.is_dir():
        return None
    modules = [m for m in json.loads((source / "modules.json").read_text(encoding="utf-8"))
               if str(m.get("type", "")).endswith("models.Pooling") and m.get("path")]  # never over the model's config.json
    for m in modules:
        (target / m["path"]).mkdir(parents=True, exist_ok=True)
        (target / m["path"] / "config.json").write_bytes((source / m["path"] / "config.json").read_bytes())
    (target / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    return pooling


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "params" else {f"{prefix}{k}": v})
    return out


def adopt_encoder(encoder: Any, asked: Any, default: Any, source: str) -> Any:
    """The source's encoder config with the adjustable keys (:data:`ADJUSTABLE`) the run changed from ``default``.

    Raises:
        ConfigError: another model key differs from ``default`` (the architecture is the source's).
    """
    before, after = _flat(default.to_dict()), _flat(asked.to_dict())
    changed = [k for k in after if after[k] != before.get(k)]
    refused = [k for k in changed if k not in ADJUSTABLE]
    if refused:
        raise ConfigError(f"--set model.{refused[0]}: with --model the architecture is {source}'s; "
                          f"only {', '.join('model.' + k for k in ADJUSTABLE)} may change")
    out = encoder
    if "dropout" in changed:
        out = out.replace(dropout=asked.dropout)
    if "attention.dropout" in changed:
        out = out.replace(attention=out.attention.replace(dropout=asked.attention.dropout))
    return out


# -- the job --------------------------------------------------------------------------------------
class MLMJob(Job):
    """``attnkit train mlm``: masked LM (+ NSP or SOP) on text; the best model by held-out loss is saved."""

    task = "mlm"
    summary = "BERT pretraining (masked LM, + NSP or SOP) on text"

    def __init__(self) -> None:
        from attnkit.models.bert import BertConfig
        from attnkit.objectives.mlm import MaskingConfig

        self.config_types = {"model": BertConfig, "train": TrainConfig, "data": MLMDataConfig, "masking": MaskingConfig}

    def defaults(self) -> dict[str, Config]:
        from attnkit.models.bert import bert_preset
        from attnkit.objectives.mlm import MaskingConfig

        return {"model": bert_preset(DEFAULT_PRESET), "train": scratch_train(), "data": MLMDataConfig(), "masking": MaskingConfig()}

    def metric_names(self, configs: dict[str, Config]) -> tuple[str, ...]:
        """What :class:`~attnkit.training.mlm.PretrainingTask` evaluates: masked-LM loss and accuracy, the span boundary
        objective's loss, the pair task's, their sum."""
        pair = configs["data"].pair_task  # type: ignore[attr-defined]
        masking = configs.get("masking")
        sbo = ("sbo_loss",) if masking is not None and masking.span_boundary else ()  # type: ignore[attr-defined]
        return ("loss", "mlm_loss", "mlm_accuracy", *sbo, *(() if pair == "none" else (f"{pair}_loss", f"{pair}_accuracy")))

    def check(self, configs: dict[str, Config]) -> None:
        m, d = configs["model"], configs["data"]
        if d.tokens:  # type: ignore[attr-defined]
            if d.segmenter != "none" or d.phrases or d.entity_tagger:  # type: ignore[attr-defined]
                raise ConfigError("data.segmenter, data.phrases and data.entity_tagger apply to --text; a token file's words are those "
                                  "attnkit data prepare marked (leave them unset with data.tokens)")
            if d.pair_task != "none":  # type: ignore[attr-defined]
                raise ConfigError(f"data.tokens trains masked LM alone on windows of the token file; --{d.pair_task} needs "  # type: ignore[attr-defined]
                                  "sentence pairs from --text (or set data.pair_task=none)")
            if d.model is not None:  # type: ignore[attr-defined]
                raise ConfigError("data.tokens trains a new model on the token file; continuing a model (--model) reads --text")
        elif not d.text:  # type: ignore[attr-defined]
            raise ConfigError("attnkit train mlm needs --text FILE [FILE ...] (UTF-8 text, plain or .gz, a GLUE .tsv or a CoNLL file), "
                              "or --recipe with --data-root, or --set data.tokens=FILE (attnkit data prepare)")
        if d.model is not None:  # type: ignore[attr-defined]
            given = [f"--{k.replace('_', '-')}" for k in ("vocab_size", "cased") if getattr(d, k) not in (None, False)]
            if given:
                raise ConfigError(f"--model takes the architecture and vocabulary from {d.model}; leave out {', '.join(given)}")  # type: ignore[attr-defined]
            return  # the model's limits are checked once it is read
        _check_model(m, d, "the model config")

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.data.pretraining import cut_long_sentences, split_documents, tokenize_documents
        from attnkit.data.wordpiece import WordPieceTokenizer
        from attnkit.models.bert_pretraining import BertPretraining, BertPretrainingConfig
        from attnkit.training.mlm import PretrainingTask

        m, t, d = configs["model"], configs["train"], configs["data"]
        if d.tokens:  # type: ignore[attr-defined]
            return self._prepare_stream(configs, out, resume=resume, log=log)
        texts = read_text(d)  # type: ignore[arg-type]  # an empty or missing file is reported before anything is learned
        source = encoder = src_dir = None
        if d.model is not None and not resume:  # type: ignore[attr-defined]
            src_dir = model_dir(d.model)  # type: ignore[attr-defined]
            source, encoder = load_encoder_source(src_dir)
            m = adopt_encoder(encoder.config, m, self.defaults()["model"], str(d.model))  # type: ignore[attr-defined]
        max_len = m.max_len  # type: ignore[attr-defined]
        if resume:
            tok = WordPieceTokenizer.from_file(out / "tokenizer.json", max_len=max_len)
        elif d.tokenizer is not None or src_dir is not None:  # type: ignore[attr-defined]
            tok = WordPieceTokenizer.from_file(d.tokenizer or src_dir, max_len=max_len)  # type: ignore[attr-defined]
        else:
            tok = learn_tokenizer(texts, d.vocab_size or DEFAULT_VOCAB_SIZE, cased=d.cased)  # type: ignore[attr-defined]
        if tok.mask_id is None:
            raise DataError("the tokenizer has no [MASK] token; masked-LM pretraining needs one")
        if d.model is None and not resume:  # type: ignore[attr-defined]  # a fresh model takes the tokenizer's vocabulary
            default = self.defaults()["model"]
            if m.vocab_size == default.vocab_size:  # type: ignore[attr-defined]
                m = m.replace(vocab_size=tok.vocab_size)
            if m.pad_id == default.pad_id and tok.pad_id < m.vocab_size:  # type: ignore[attr-defined]
                m = m.replace(pad_id=tok.pad_id)
        where = str(d.model) if d.model is not None else "the model config"  # type: ignore[attr-defined]
        if m.vocab_size != tok.vocab_size:  # type: ignore[attr-defined]
            raise ConfigError(f"the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {m.vocab_size} ({where}); "  # type: ignore[attr-defined]
                              "they must be equal")
        if m.pad_id != tok.pad_id:  # type: ignore[attr-defined]
            raise ConfigError(f"the tokenizer's [PAD] is id {tok.pad_id} but the model's pad_id is {m.pad_id} ({where}); "  # type: ignore[attr-defined]
                              "they must be equal")
        _check_model(m, d, where)
        if d.model is not None and not resume and t.schedule.warmup == 0:  # type: ignore[attr-defined]
            warmup = int(d.warmup_fraction * t.steps)  # type: ignore[attr-defined]
            t = t.replace(schedule=t.schedule.replace(warmup=warmup))  # type: ignore[attr-defined]
            log(f"warm-up: {warmup} steps ({d.warmup_fraction:.0%} of {t.steps}; data.warmup_fraction)")  # type: ignore[attr-defined]

        if d.pair_task in ("nsp", "sso") and len(texts) < 2:  # type: ignore[attr-defined]
            what = "next-sentence prediction" if d.pair_task == "nsp" else "the sentence structural objective"  # type: ignore[attr-defined]
            raise DataError(f"{what} needs at least two documents; separate them by blank lines (or --documents files)")
        from attnkit.runs.lexicon import unit_lexicon

        lexicon = unit_lexicon(d, texts, out, log, device=t.device)  # type: ignore[arg-type, attr-defined]
        docs = [cut_long_sentences(doc, (d.max_seq_len - 3) // 2)  # type: ignore[attr-defined]
                for doc in tokenize_documents(texts, tok, d.segmenter, lexicon)]  # type: ignore[attr-defined]
        if not docs:
            raise DataError("the text gives no tokens")
        docs, train_ids, valid_ids = split_documents(docs, d.valid_fraction)  # type: ignore[attr-defined]
        device = pick_device(t.device)  # type: ignore[attr-defined]
        check_size(BertModel, m, device, copies=4)  # the encoder, before any weight is allocated
        task = PretrainingTask(docs, train_ids, valid_ids, tokenizer=tok, max_seq_len=d.max_seq_len, batch_size=t.batch_size,  # type: ignore[attr-defined]
                               pair_task=d.pair_task, masking=configs["masking"], short_seq_prob=d.short_seq_prob,  # type: ignore[attr-defined]
                               max_eval_pairs=d.max_eval_pairs, device=device, log=log)  # type: ignore[attr-defined]
        first = task.epoch_pairs(0, t.seed)  # type: ignore[attr-defined]
        if not first:
            raise DataError("the training documents give no sentence pairs; every document has a single sentence "
                            "(separate documents by blank lines)")
        if not task.valid_pairs:
            raise DataError("the held-out documents give no sentence pairs; raise --set data.valid_fraction or add text")
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]  # the initial weights, too, follow train.seed
        model = BertPretraining(BertPretrainingConfig(encoder=m, pair_task=d.pair_task,  # type: ignore[arg-type, attr-defined]
                                                      span_boundary=configs["masking"].span_boundary))  # type: ignore[attr-defined]
        fresh = init_from(model, source, src_dir) if source is not None else []  # type: ignore[arg-type]
        del source, encoder
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            tok.save(out / "tokenizer.json")
        n_tokens = sum(len(s.ids) for doc in docs for s in doc)
        log(f"{len(docs):,} documents ({len(valid_ids):,} held out), {n_tokens:,} tokens; vocabulary {tok.vocab_size:,}; "
            f"{len(first):,} training sequences per epoch, {len(task.valid_pairs):,} held out; pair task: {d.pair_task}")  # type: ignore[attr-defined]
        log(f"model: {model.num_parameters() / 1e6:.2f}M parameters on {device}")
        before_fit = None
        if src_dir is not None:
            parts = ["the masked-LM head starts fresh (its decoder is tied to the word embeddings)" if "masked-LM head" in fresh
                     else "masked-LM head loaded", *(f"the {p} starts fresh" for p in fresh if p != "masked-LM head")]
            log(f"initialised from {d.model}: encoder loaded; " + "; ".join(parts))  # type: ignore[attr-defined]
            before_fit = _start_eval(model, task, out, log)
        return Prepared(model=model, task=task, configs={**configs, "model": m, "train": t}, tokenizer=tok, before_fit=before_fit)

    def _prepare_stream(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        """``data.tokens``: masked LM on windows of the memory-mapped token file, with the tokenizer it was written with."""
        import shutil

        from attnkit.data.stream import TokenFile
        from attnkit.data.stream_mlm import StreamMLMTask
        from attnkit.data.wordpiece import WordPieceTokenizer
        from attnkit.models.bert_pretraining import BertPretraining, BertPretrainingConfig

        m, t, d = configs["model"], configs["train"], configs["data"]
        file = TokenFile(d.tokens)  # type: ignore[attr-defined]
        source = out / "tokenizer.json" if resume else Path(file.header["tokenizer"])
        file.check_tokenizer(source)
        tok = WordPieceTokenizer.from_file(source, max_len=m.max_len)  # type: ignore[attr-defined]
        if tok.mask_id is None:
            raise DataError(f"{source} has no [MASK] token; masked-LM pretraining needs one")
        default = self.defaults()["model"]
        if not resume and m.vocab_size == default.vocab_size:  # type: ignore[attr-defined]
            m = m.replace(vocab_size=tok.vocab_size)
        if not resume and m.pad_id == default.pad_id and tok.pad_id < m.vocab_size:  # type: ignore[attr-defined]
            m = m.replace(pad_id=tok.pad_id)
        if m.vocab_size != tok.vocab_size or m.pad_id != tok.pad_id:  # type: ignore[attr-defined]
            raise ConfigError(f"the tokenizer has {tok.vocab_size} tokens and [PAD] {tok.pad_id}, the model vocab_size "  # type: ignore[attr-defined]
                              f"{m.vocab_size} and pad_id {m.pad_id}; they must be equal")  # type: ignore[attr-defined]
        _check_model(m, d, "the model config")
        device = pick_device(t.device)  # type: ignore[attr-defined]
        check_size(BertModel, m, device, copies=4)
        task = StreamMLMTask(file, tokenizer=tok, max_seq_len=d.max_seq_len, batch_size=t.batch_size, masking=configs["masking"],  # type: ignore[attr-defined,arg-type]
                             valid_fraction=d.valid_fraction, max_eval_windows=d.max_eval_pairs, device=device, log=log)  # type: ignore[attr-defined]
        out.mkdir(parents=True, exist_ok=True)
        if not resume and source.resolve() != (out / "tokenizer.json").resolve():
            shutil.copyfile(source, out / "tokenizer.json")  # the same bytes: a resumed run passes the file's check
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]
        model = BertPretraining(BertPretrainingConfig(encoder=m, pair_task="none",  # type: ignore[arg-type]
                                                      span_boundary=configs["masking"].span_boundary))  # type: ignore[attr-defined]
        log(f"{task.split:,} training and {len(file) - task.split:,} held-out tokens in {file.path}; vocabulary {tok.vocab_size:,}; "
            f"rows of {d.max_seq_len}; {model.num_parameters() / 1e6:.2f}M parameters on {device}")  # type: ignore[attr-defined]
        return Prepared(model=model, task=task, configs={**configs, "model": m}, tokenizer=tok)

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        final = super().finish(prepared, trainer, result, out, log)
        d = prepared.configs["data"]
        if d.model is not None:  # type: ignore[attr-defined]
            pooling = carry_pooling(model_dir(d.model), out / "model")  # type: ignore[attr-defined]
            if pooling is not None:
                log(f"{out / 'model'} keeps {d.model}'s {pooling} pooling for attnkit finetune classify (modules.json)")  # type: ignore[attr-defined]
                final["pooling"] = pooling
        return final


def _check_model(m: Any, d: Any, where: str) -> None:
    if d.max_seq_len > m.max_len:
        raise ConfigError(f"data.max_seq_len={d.max_seq_len} is longer than the model's {m.max_len} positions")
    if d.pair_task != "none" and not m.pooler:
        raise ConfigError(f"--{d.pair_task} classifies the pooled [CLS] vector, but {where} has no pooler")


def _start_eval(model: Any, task: Any, out: Path, log: Log) -> Any:
    """Before a continued run: the held-out scores of the loaded weights, in ``OUT/start_eval.json``."""

    def before_fit(trainer: Trainer) -> None:
        model.eval()
        with torch.no_grad(), trainer.autocast():
            start = task.evaluate(model)
        log("step 0 (the loaded weights): " + " ".join(f"{k}={v:.4f}" for k, v in start.items()))
        atomic_write_text(out / "start_eval.json", json.dumps({"step": 0, **start}, indent=2) + "\n")

    return before_fit


JOBS = {"mlm": MLMJob}
