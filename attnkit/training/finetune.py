"""Fine-tuning tasks for the BERT heads: sequence classification and token classification (NER).

Devlin et al. 2019, section 4 and figure 4: a classifier on [CLS] for single sentences and
``[CLS] A [SEP] B [SEP]`` pairs, a per-token classifier for NER with the label on each word's
first sub-word (the other sub-words are ignored by the loss, section 5.3).

Examples are tokenized once. Batches are padded only to their own longest row (dynamic
padding), and rows of similar length are batched together: the epoch's shuffled examples are cut
into chunks of ``bucket_size`` batches, each chunk is sorted by length and cut into batches, and
the batch order is shuffled again. Evaluation sorts the whole set by length.

Training may smooth the labels (``reg.label_smoothing``) and add R-Drop (``reg.rdrop``; Liang et al. 2021,
eq. 3, :mod:`attnkit.objectives.rdrop`): the batch is stacked on itself, ``(2B, T)``, and run
once, so the two halves see different dropout masks for the cost of one forward pass of twice
the rows (twice the activation memory). The dev loss is plain cross-entropy, without either.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import torch
from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.data.batching import bucketed_batches, pad, sorted_batches
from attnkit.data.conll import TaggedSentences
from attnkit.data.glue import ClassificationData
from attnkit.data.transfer import TensorBatch
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.errors import CheckpointError, ConfigError
from attnkit.metrics import accuracy, entity_scores
from attnkit.objectives.classification import classification_loss
from attnkit.objectives.rdrop import rdrop_loss
from attnkit.training.dev import dev_pass

IGNORE = -100


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig(Config):
    """Data side of fine-tuning.

    ``max_len`` caps every row, specials included (it is lowered to the model's position
    limit). ``epochs`` sets ``train.steps`` unless ``train.steps`` is given; ``warmup_ratio``
    sets ``train.schedule.warmup`` (as a fraction of the steps) unless it is given.
    ``bucket_size``: how many batches' worth of examples are sorted by length together.
    ``limit``: read at most this many training examples (0 = all).
    ``classifier`` (classify only): how the sequence becomes one vector, see
    :class:`~attnkit.models.BertTaskConfig`; ``auto`` is ``mean`` for a sentence-transformers
    checkpoint trained with mean pooling (its ``modules.json`` says so), else the pooler when the
    encoder has one (BERT's choice), else ``cls_tanh``. A checkpoint whose pooler was never trained (sentence-
    embedding models such as all-MiniLM-L6-v2 were trained on mean-pooled states) may do better
    with ``cls_tanh``, which starts its dense layer fresh, or ``mean`` (their own pooling).
    """

    max_len: int = 128
    epochs: float = 3.0
    warmup_ratio: float = 0.1
    bucket_size: int = 50
    eval_batch_size: int = 128
    classifier_dropout: float | None = None
    classifier: Literal["auto", "pooler", "cls_tanh", "cls_gelu", "mean"] = "auto"
    limit: int = 0

    def validate(self) -> None:
        check(self.max_len >= 4, "max_len", self.max_len, "must be >= 4 (specials plus text)")
        check(self.epochs > 0, "epochs", self.epochs, "must be positive")
        check(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", self.warmup_ratio, "must be in [0, 1)")
        check(self.bucket_size >= 1, "bucket_size", self.bucket_size, "must be >= 1")
        check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "must be >= 1")
        check(self.limit >= 0, "limit", self.limit, "must be >= 0 (0 reads everything)")


# -- encoding --------------------------------------------------------------------------------
@dataclass
class Encoded:
    """Tokenized examples, unpadded: ``ids[i]``, ``segments[i]`` and per-position ``targets[i]``."""

    ids: list[list[int]]
    segments: list[list[int]]
    targets: list[int] | list[list[int]]  # one label id per example, or per position (IGNORE where unlabelled)
    word_ids: list[list[int | None]]
    truncated: int  # examples that lost tokens to the length limit

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(r) for r in self.ids]


def _unpad(tok: WordPieceTokenizer, texts, pairs, max_len: int, pretokenized: bool, chunk: int = 1024):
    """Tokenize in chunks; yield per row (ids, segment ids, word ids) without padding, and the truncation count."""
    rows, truncated = [], 0
    for i in range(0, len(texts), chunk):
        b = tok(texts[i : i + chunk], None if pairs is None else pairs[i : i + chunk], max_len=max_len, is_pretokenized=pretokenized)
        truncated += b.truncated
        lens = b.attention_mask.sum(1).tolist()
        for n, t in enumerate(lens):
            rows.append((b.ids[n, :t].tolist(), b.segment_ids[n, :t].tolist(), b.word_ids[n][:t]))
    return rows, truncated


def encode_classification(tok: WordPieceTokenizer, data: ClassificationData, labels: Sequence[str], max_len: int) -> Encoded:
    """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` per example; label ids index ``labels`` (-100 if unlabelled)."""
    rows, truncated = _unpad(tok, data.texts, data.pairs, max_len, False)
    index = {name: i for i, name in enumerate(labels)}
    targets = [index[x] for x in data.labels] if data.labels is not None else [IGNORE] * len(rows)
    return Encoded([r[0] for r in rows], [r[1] for r in rows], targets, [r[2] for r in rows], truncated)


def encode_tagging(tok: WordPieceTokenizer, data: TaggedSentences, tags: Sequence[str], max_len: int) -> Encoded:
    """Words -> sub-words; each word's tag goes on its first sub-word, -100 elsewhere (and on specials)."""
    rows, truncated = _unpad(tok, data.tokens, None, max_len, True)
    index = {name: i for i, name in enumerate(tags)}
    targets: list[list[int]] = []
    for n, (_, _, words) in enumerate(rows):
        sent = data.tags[n] if data.tags is not None else None
        row, prev = [], None
        for w in words:
            first = w is not None and w != prev
            row.append(index[sent[w]] if first and sent is not None else IGNORE)
            prev = w
        targets.append(row)
    return Encoded([r[0] for r in rows], [r[1] for r in rows], targets, [r[2] for r in rows], truncated)


# -- batching --------------------------------------------------------------------------------
@dataclass
class Batch(TensorBatch):
    ids: Tensor  # (B, T)
    segment_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    targets: Tensor  # (B,) or (B, T)
    index: list[int]  # which examples, in this order


def collate(data: Encoded, index: Sequence[int], pad_id: int) -> Batch:
    """Pad the chosen examples to the longest among them (:func:`attnkit.data.batching.pad`)."""
    ids, mask = pad([data.ids[i] for i in index], pad_id, return_mask=True)  # (B, T)
    seg = pad([data.segments[i] for i in index], 0)  # (B, T)
    if len(data) and isinstance(data.targets[0], list):  # per token
        targets = pad([data.targets[i] for i in index], IGNORE)  # (B, T)
    else:
        targets = torch.tensor([data.targets[i] for i in index], dtype=torch.long)  # (B,)
    return Batch(ids, seg, mask.long(), targets, list(index))


def steps_per_epoch(n: int, batch_size: int, grad_accum: int = 1) -> int:
    return max(1, math.ceil(math.ceil(n / batch_size) / grad_accum))


# -- tasks (the Trainer's protocol, attnkit.training.tasks) -----------------------------------
class _FinetuneTask:
    varying_lengths = True  # length-bucketed batches: a new length at most steps

    def __init__(self, train: Encoded, dev: Encoded | None, *, batch_size: int, eval_batch_size: int, bucket_size: int,
                 pad_id: int, device: torch.device | str = "cpu", label_smoothing: float = 0.0, rdrop: float = 0.0) -> None:
        self.train, self.dev = train, dev
        self.batch_size, self.eval_batch_size, self.bucket_size = batch_size, eval_batch_size, bucket_size
        self.pad_id, self.device = pad_id, torch.device(device)
        self.label_smoothing, self.rdrop = label_smoothing, rdrop  # the Trainer checks rdrop against train.reg.rdrop
        self._lengths = train.lengths()

    def batches(self, epoch: int, seed: int) -> Iterator[Batch]:
        for index in bucketed_batches(self._lengths, self.batch_size, bucket_size=self.bucket_size, seed=seed, epoch=epoch):
            yield collate(self.train, index, self.pad_id).to(self.device)

    def input_tokens(self, batch: Batch) -> Tensor:
        """The non-padding tokens of the rows (classification and tagging alike)."""
        return batch.attention_mask.sum()

    def loss(self, model: nn.Module, batch: Batch, epsilon: float | None = None) -> tuple[Tensor, Tensor]:
        """Mean loss over the counted targets and their number; R-Drop only while ``model.training``.

        ``epsilon`` overrides the task's label smoothing (the dev loss passes 0).
        """
        eps = self.label_smoothing if epsilon is None else epsilon
        if self.rdrop > 0 and model.training:
            ids, mask, seg = (torch.cat([t, t]) for t in (batch.ids, batch.attention_mask, batch.segment_ids))  # (2B, T)
            logits = model(ids, attention_mask=mask, segment_ids=seg).logits  # (2B, C) or (2B, T, C)
            first, second = logits.chunk(2)  # two dropout passes over the batch
            return rdrop_loss(first, second, batch.targets, alpha=self.rdrop, epsilon=eps, ignore_index=IGNORE)
        logits = model(batch.ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids).logits
        return classification_loss(logits, batch.targets, ignore_index=IGNORE, epsilon=eps)

    def _dev(self, model: nn.Module) -> tuple[float, list[Tensor]]:
        """Dev loss (plain cross-entropy) and every dev example's logits, from one pass."""
        assert self.dev is not None
        return dev_logits(model, self.dev, pad_id=self.pad_id, batch_size=self.eval_batch_size, device=self.device)


def dev_logits(model: nn.Module, data: Encoded, *, pad_id: int, batch_size: int = 128,
               device: torch.device | str = "cpu") -> tuple[float, list[Tensor]]:
    """Cross-entropy over the labelled targets (0 if none) and, per example, its logits on the CPU
    (``(num_labels,)``, or ``(T, num_labels)`` for a tagger), in input order.

    Batches are the examples sorted by length, each padded to its own longest row
    (:func:`~attnkit.training.dev.dev_pass` over :func:`~attnkit.data.batching.sorted_batches`).
    """
    index_batches = sorted_batches(data.lengths(), batch_size)

    def step(index: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        b = collate(data, index, pad_id).to(torch.device(device))
        logits = model(b.ids, attention_mask=b.attention_mask, segment_ids=b.segment_ids).logits
        loss, n = classification_loss(logits, b.targets, ignore_index=IGNORE)
        return loss, n, logits.float().cpu()

    result = dev_pass(step, index_batches)
    out: list[Tensor | None] = [None] * len(data)
    for index, logits in zip(index_batches, result.outputs):
        for n, i in enumerate(index):
            out[i] = logits[n] if logits.dim() == 2 else logits[n, : len(data.ids[i])]
    return result.loss, out  # type: ignore[return-value]


def predict_logits(model: nn.Module, data: Encoded, *, pad_id: int, batch_size: int = 128,
                   device: torch.device | str = "cpu") -> list[Tensor]:
    """Per example, its logits on the CPU (``(num_labels,)``, or ``(T, num_labels)`` for a tagger), in input order."""
    return dev_logits(model, data, pad_id=pad_id, batch_size=batch_size, device=device)[1]


class ClassificationTask(_FinetuneTask):
    """Sentence / sentence-pair classification; evaluation reports dev loss and accuracy."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.dev is None:
            return {}
        loss, logits = self._dev(model)
        preds = [int(x.argmax()) for x in logits]
        return {"loss": loss, "accuracy": accuracy(list(self.dev.targets), preds)}


class TaggingTask(_FinetuneTask):
    """Token classification; evaluation reports dev loss and entity-level precision/recall/F1 over the words."""

    def __init__(self, train: Encoded, dev: Encoded | None, *, tags: Sequence[str], dev_sentences: TaggedSentences | None = None,
                 **kw) -> None:
        super().__init__(train, dev, **kw)
        self.tags, self.dev_sentences = list(tags), dev_sentences

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.dev is None or self.dev_sentences is None or self.dev_sentences.tags is None:
            return {}
        loss, logits = self._dev(model)
        pred = word_tags(logits, self.dev.word_ids, [len(s) for s in self.dev_sentences.tokens], self.tags)
        s = entity_scores(self.dev_sentences.tags, pred)
        return {"loss": loss, "precision": s.precision, "recall": s.recall, "f1": s.f1}


def word_tags(logits: Sequence[Tensor], word_ids: Sequence[Sequence[int | None]], n_words: Sequence[int],
              tags: Sequence[str]) -> list[list[str]]:
    """Per sentence, the tag of every word from its first sub-word's logits.

    Words with no sub-word in the input (cut by truncation, or characters the tokenizer drops)
    get ``O``.
    """
    out: list[list[str]] = []
    for lg, words, n in zip(logits, word_ids, n_words):
        best = lg.argmax(-1).tolist()
        sent = ["O"] * n
        prev = None
        for t, w in enumerate(words):
            if w is not None and w != prev:
                sent[w] = tags[best[t]]
            prev = w
        out.append(sent)
    return out


# -- models ----------------------------------------------------------------------------------
def encoder_of(model: nn.Module) -> nn.Module:
    """The BERT encoder inside ``model`` (itself for a bare :class:`~attnkit.models.BertModel`)."""
    from attnkit.models.bert import BertModel

    if isinstance(model, BertModel):
        return model
    bert = getattr(model, "bert", None)
    if isinstance(bert, BertModel):
        return bert
    raise CheckpointError(f"the model is a {type(model).__name__}, not a BERT-family encoder or head; fine-tuning needs one")


def backbone_of(model: nn.Module) -> nn.Module:
    """The encoder that fine-tuning reads: a BERT-family encoder (:func:`encoder_of`) or an
    :class:`~attnkit.models.xlnet.XLNetModel` (itself, an ``XLNetLM``, or a head's ``xlnet``)."""
    from attnkit.models.xlnet import XLNetModel

    if isinstance(model, XLNetModel):
        return model
    xlnet = getattr(model, "xlnet", None)
    if isinstance(xlnet, XLNetModel):
        return xlnet
    try:
        return encoder_of(model)
    except CheckpointError:
        raise CheckpointError(f"the model is a {type(model).__name__}, not a BERT-family or XLNet encoder or head; "
                              "fine-tuning needs one") from None


def checkpoint_pooling(model_dir: Path | str) -> str | None:
    """The pooling a sentence-transformers checkpoint was trained with (``"mean"`` or ``"cls"``),
    read from its ``modules.json`` / ``*_Pooling/config.json``; ``None`` for other directories."""
    root = Path(model_dir)
    if not (root / "modules.json").is_file():
        return None
    try:
        modules = json.loads((root / "modules.json").read_text(encoding="utf-8"))
        for m in modules:
            if str(m.get("type", "")).endswith("models.Pooling"):
                cfg = json.loads((root / m.get("path", "") / "config.json").read_text(encoding="utf-8"))
                if cfg.get("pooling_mode_mean_tokens"):
                    return "mean"
                if cfg.get("pooling_mode_cls_token"):
                    return "cls"
    except (OSError, ValueError, AttributeError, TypeError):
        return None  # an unreadable side file: fall back to the architecture's own choice
    return None


def build_head(source: nn.Module, kind: str, labels: Sequence[str], classifier_dropout: float | None = None,
               classifier: str = "auto") -> nn.Module:
    """A fresh classification (``kind="classify"``) or tagging (``"ner"``) head on ``source``'s encoder weights.

    ``classifier="auto"`` uses the pooler when the encoder has one, else ``cls_tanh``. An XLNet
    source gets :class:`~attnkit.models.xlnet_heads.XLNetClassifier` / ``XLNetTagger``, its summary
    at the first token for ``auto`` and ``cls_tanh``, the mean for ``mean``.
    """
    from attnkit.models.bert_heads import BertClassifier, BertTagger, BertTaskConfig
    from attnkit.models.xlnet import XLNetModel

    if kind not in ("classify", "ner"):
        raise ConfigError(f"kind={kind!r} is not 'classify' or 'ner'")
    enc = backbone_of(source)
    if isinstance(enc, XLNetModel):
        return _xlnet_head(enc, kind, labels, classifier_dropout, classifier)
    if classifier == "auto":
        classifier = "pooler" if enc.config.pooler else "cls_tanh"
    elif classifier == "pooler" and not enc.config.pooler:
        raise ConfigError("classifier='pooler' is not allowed: the encoder has no pooler; use 'cls_tanh' or 'cls_gelu'")
    cfg = BertTaskConfig(encoder=enc.config, num_labels=len(labels), labels=tuple(labels), classifier=classifier,
                         classifier_dropout=classifier_dropout)
    head: nn.Module = BertClassifier(cfg) if kind == "classify" else BertTagger(cfg)
    head.bert.load_state_dict(enc.state_dict())
    return head


XLNET_SUMMARY = {"auto": "first", "cls_tanh": "first", "mean": "mean"}  # data.classifier -> XLNetTaskConfig.summary


def _xlnet_head(enc: nn.Module, kind: str, labels: Sequence[str], classifier_dropout: float | None, classifier: str) -> nn.Module:
    """A fresh XLNet classifier or tagger holding ``enc``'s weights."""
    from attnkit.models.xlnet_heads import XLNetClassifier, XLNetTagger, XLNetTaskConfig

    if classifier not in XLNET_SUMMARY:
        raise ConfigError(f"classifier={classifier!r} is not available for XLNet; use one of {', '.join(XLNET_SUMMARY)}")
    cfg = XLNetTaskConfig(encoder=enc.config, num_labels=len(labels), labels=tuple(labels), summary=XLNET_SUMMARY[classifier],
                          classifier_dropout=classifier_dropout)
    head: nn.Module = XLNetClassifier(cfg) if kind == "classify" else XLNetTagger(cfg)
    own = {k: v for k, v in enc.state_dict().items() if not k.startswith("lm_head.")}  # an XLNetLM brings its output layer
    head.xlnet.load_state_dict(own)
    return head
