"""Prompt-based few-shot classification with a masked LM: PET (Schick & Schütze 2021) and the LM-BFF protocol.

PET (Schick & Schütze 2021, "Exploiting Cloze Questions for Few Shot Text Classification and
Natural Language Inference", section 3):

* a *pattern* P turns an input x into a cloze question with exactly one [MASK]
  (``"{a} It was [MASK]."``; a sentence pair fills ``{a}`` and ``{b}``);
* a *verbaliser* v maps each label l to one vocabulary token v(l) (``positive=great``);
* the score of l is the MLM head's logit of v(l) at the mask, ``s_p(l | x) = M(v(l) | P(x))``
  (eq. 1), and ``q_p(l | x) = softmax_l s_p(l | x)`` (eq. 2);
* each pattern's model is fine-tuned with cross-entropy between ``q_p`` and the label (eq. 3),
  optionally alongside masked-LM training on unlabelled rows (section 3.1, :mod:`attnkit.training.pet_aux`);
* the pattern models form an ensemble, ``s(l | x) = (1/Z) sum_p w(p) s_p(l | x)``, with ``w(p)``
  uniform or each model's accuracy on the training set before training (section 3.2); its
  soft labels ``softmax(s / T)``, ``T = 2``, label unlabelled examples on which a sequence
  classifier is trained (knowledge distillation, Hinton et al. 2015).

Zero-shot classification is the same score with no training. The LM-BFF protocol (Gao et al.
2021, section 3) samples K examples per class for training and a dev set of K per class for
model selection, once per seed, and reports the mean and standard deviation over the seeds.

Cloze inputs are one sequence, ``[CLS] P(x) [SEP]`` with segment 0; when too long, the
longest filled-in text loses its last tokens until the pattern fits, so the mask is kept.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from torch import Tensor, nn

from attnkit.data.batching import bucketed_batches, pad, sorted_batches
from attnkit.data.glue import ClassificationData
from attnkit.data.transfer import TensorBatch
from attnkit.errors import ConfigError, DataError
from attnkit.metrics import accuracy
from attnkit.objectives.classification import classification_loss
from attnkit.objectives.mlm import mlm_loss
from attnkit.training.dev import dev_pass

if TYPE_CHECKING:
    from attnkit.training.pet_aux import AuxiliaryLM

MASK = "[MASK]"
_SLOT = re.compile(r"(\{a\}|\{b\}|\{t\}|\[MASK\])")


# -- patterns and verbalisers --------------------------------------------------------------------
@dataclass(frozen=True)
class Pattern:
    """A cloze pattern: literal text, the slots ``{a}`` / ``{b}`` (first / second sentence) and one ``[MASK]``.

    A ``{t}`` slot holds ``triggers``, token ids given as ids (AutoPrompt's trigger tokens,
    :mod:`attnkit.training.autoprompt`), never cut by truncation.
    """

    text: str
    triggers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.text.count(MASK) != 1:
            raise ConfigError(f"pattern {self.text!r} must hold exactly one {MASK}")
        if "{a}" not in self.text:
            raise ConfigError(f"pattern {self.text!r} has no {{a}} slot for the input sentence")
        if ("{t}" in self.text) != bool(self.triggers):
            raise ConfigError(f"pattern {self.text!r}: a {{t}} slot and trigger tokens go together")

    @property
    def pairs(self) -> bool:
        return "{b}" in self.text

    def pieces(self) -> list[str]:
        """The pattern split at its slots: ``"{a} It was [MASK]."`` -> ``["{a}", " It was ", "[MASK]", "."]``."""
        return [p for p in _SLOT.split(self.text) if p]


def parse_verbalizer(spec: str, labels: Sequence[str]) -> dict[str, str]:
    """``"positive=great,negative=terrible"`` -> ``{label: word}``, one word for every label.

    Raises:
        ConfigError: malformed, a label missing or unknown, or two labels with one word.
    """
    out: dict[str, str] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if "=" not in item:
            raise ConfigError(f"verbalizer entry {item!r} is not LABEL=WORD (e.g. positive=great,negative=terrible)")
        label, word = (s.strip() for s in item.split("=", 1))
        out[label] = word
    unknown = sorted(set(out) - set(labels))
    missing = [label for label in labels if label not in out]
    if unknown or missing:
        raise ConfigError(f"verbalizer {spec!r} must name every label ({', '.join(labels)}): "
                          + "; ".join(x for x in (f"unknown {unknown}" if unknown else "", f"missing {missing}" if missing else "") if x))
    if len(set(out.values())) < len(out):
        raise ConfigError(f"verbalizer {spec!r} gives two labels one word; each label needs its own")
    return {label: out[label] for label in labels}


def verbalizer_ids(tok, words: dict[str, str]) -> list[int]:
    """The vocabulary id of each label's word, in label order.

    Raises:
        ConfigError: a word that is not exactly one token of the vocabulary.
    """
    ids = []
    for label, word in words.items():
        pieces = tok.tokenizer.encode(word, add_special_tokens=False).ids
        if len(pieces) != 1 or pieces[0] == tok.unk_id:
            shown = tok.tokenize(word)
            raise ConfigError(f"verbalizer word {word!r} (label {label!r}) is {shown} in this vocabulary; PET needs one token per label")
        ids.append(pieces[0])
    return ids


# -- encoding --------------------------------------------------------------------------------------
@dataclass
class Cloze:
    """Cloze inputs, unpadded: ``ids[i]`` and the position of its mask; ``targets[i]`` a label id (-100 unlabelled)."""

    ids: list[list[int]]
    mask_pos: list[int]
    targets: list[int]
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(r) for r in self.ids]

    def subset(self, index: Sequence[int]) -> "Cloze":
        return Cloze([self.ids[i] for i in index], [self.mask_pos[i] for i in index], [self.targets[i] for i in index])


def encode_cloze(tok, data: ClassificationData, pattern: Pattern, labels: Sequence[str], max_len: int) -> Cloze:
    """``[CLS] P(x) [SEP]`` per example; the longest filled slot is cut from its end until the row fits ``max_len``.

    Raises:
        ConfigError: a pair pattern on single sentences, or a pattern whose own text leaves no room.
    """
    if pattern.pairs and data.pairs is None:
        raise ConfigError(f"pattern {pattern.text!r} has a {{b}} slot but {data.source or 'the data'} holds single sentences")
    if tok.mask_id is None:
        raise ConfigError("the tokenizer has no [MASK] token; cloze patterns need one")
    enc = tok.tokenizer.encode
    pieces = pattern.pieces()
    literal = {p: enc(p, add_special_tokens=False).ids for p in pieces if p not in ("{a}", "{b}", "{t}", MASK)}
    literal["{t}"] = list(pattern.triggers)
    index = {name: i for i, name in enumerate(labels)}
    rows, masks, truncated = [], [], 0
    for n in range(len(data)):
        slots = {"{a}": enc(data.texts[n], add_special_tokens=False).ids}
        if pattern.pairs:
            slots["{b}"] = enc(data.pairs[n], add_special_tokens=False).ids  # type: ignore[index]
        fixed = 2 + 1 + sum(len(literal[p]) for p in pieces if p in literal)  # specials, the mask, text and triggers
        over = fixed + sum(len(v) for v in slots.values()) - max_len
        if over > 0:
            truncated += 1
            if fixed >= max_len:
                raise ConfigError(f"pattern {pattern.text!r} needs {fixed} tokens, more than max_len={max_len}")
            while over > 0:  # one token at a time from the longest slot, as BERT truncates pairs
                longest = max(slots, key=lambda k: len(slots[k]))
                slots[longest] = slots[longest][:-1]
                over -= 1
        ids = [tok.cls_id]
        for p in pieces:
            if p == MASK:
                masks.append(len(ids))
                ids.append(tok.mask_id)
            else:
                ids.extend(slots[p] if p in slots else literal[p])
        rows.append(ids + [tok.sep_id])
    targets = [index[x] for x in data.labels] if data.labels is not None else [-100] * len(rows)
    return Cloze(rows, masks, targets, truncated)


# -- scores ----------------------------------------------------------------------------------------
def mlm_of(model: nn.Module) -> nn.Module:
    """The masked-LM model inside ``model`` (a :class:`~attnkit.models.bert_heads.BertMLM`, or ``BertPretraining.mlm``).

    Raises:
        ConfigError: the model has no masked-LM head (e.g. a sentence encoder such as all-MiniLM-L6-v2).
    """
    from attnkit.models.bert_heads import BertMLM

    if isinstance(model, BertMLM):
        return model
    if isinstance(getattr(model, "mlm", None), BertMLM):
        return model.mlm  # type: ignore[return-value]
    raise ConfigError(f"the model is a {type(model).__name__} without a masked-LM head; cloze scoring needs one "
                      "(adapt an encoder first with attnkit train mlm, e.g. --recipe sst2-tapt)")


def mask_scores(mlm: nn.Module, ids: Tensor, attention_mask: Tensor | None, mask_pos: Tensor, label_ids: Tensor) -> Tensor:
    """``s_p(l | x)`` (PET, eq. 1): the MLM logits at each row's mask, restricted to the verbaliser's tokens,
    with the head run at the masks only (``positions`` of :meth:`~attnkit.models.bert_heads.BertMLM.forward`).
    The masked LM's own forward runs, so whatever wraps it applies (a soft prompt's
    virtual tokens, :mod:`attnkit.peft.prompt`).

    Args:
        mlm: a :class:`~attnkit.models.bert_heads.BertMLM`, possibly adapted.
        ids: ``(B, T)`` cloze rows.
        attention_mask: ``(B, T)`` 1 for real tokens.
        mask_pos: ``(B,)`` the mask's position in each row.
        label_ids: ``(C,)`` the token of each label.

    Returns:
        ``(B, C)`` scores.
    """
    logits = mlm(ids, attention_mask=attention_mask, positions=mask_pos[:, None]).logits[:, 0]  # (B, V)
    return logits[:, label_ids]  # (B, C)


@dataclass
class ClozeBatch(TensorBatch):
    ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    mask_pos: Tensor  # (B,)
    targets: Tensor  # (B,) label ids, or (B, C) soft labels
    index: list[int]
    lm_ids: Tensor | None = None  # (R, T') masked unlabelled cloze rows (PET's auxiliary LM, pet_aux)
    lm_mask: Tensor | None = None  # (R, T')
    lm_positions: Tensor | None = None  # (R, P) the chosen positions
    lm_targets: Tensor | None = None  # (R, P) their original ids, IGNORE in unused slots


def collate_cloze(data: Cloze, index: Sequence[int], pad_id: int, soft: Tensor | None = None) -> ClozeBatch:
    """Pad the chosen rows to the longest among them; ``soft``: ``(N, C)`` soft labels to use as targets."""
    ids, mask = pad([data.ids[i] for i in index], pad_id, return_mask=True)  # (B, T)
    targets = soft[list(index)] if soft is not None else torch.tensor([data.targets[i] for i in index], dtype=torch.long)
    return ClozeBatch(ids, mask.long(), torch.tensor([data.mask_pos[i] for i in index]), targets, list(index))


class PETModel(nn.Module):
    """A masked LM read as a classifier through a verbaliser: ``forward`` returns ``(B, C)`` scores
    (:func:`mask_scores`: the head runs at the masks only).

    Args:
        mlm: a :class:`~attnkit.models.bert_heads.BertMLM` (possibly with a soft prompt, :mod:`attnkit.peft.prompt`).
        label_ids: the verbaliser's token per label.
    """

    def __init__(self, mlm: nn.Module, label_ids: Sequence[int]) -> None:
        super().__init__()
        self.mlm = mlm
        self.config = mlm.config
        self.register_buffer("label_ids", torch.tensor(list(label_ids)), persistent=False)

    def forward(self, ids: Tensor, attention_mask: Tensor, mask_pos: Tensor) -> Tensor:
        return mask_scores(self.mlm, ids, attention_mask, mask_pos, self.label_ids)  # (B, C)

    def save_pretrained(self, path, **kw):
        """Saving a PET model saves its masked LM (the verbaliser is the run's setting)."""
        return self.mlm.save_pretrained(path, **kw)

    def state_dict(self, *args, **kw):
        """The masked LM's tensors under its own names, as saved (so checkpoints resume into a PET model)."""
        return self.mlm.state_dict(*args, **kw)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.mlm.load_state_dict(state_dict, strict=strict, assign=assign)


# -- the Trainer's tasks ---------------------------------------------------------------------------
class BestSnapshot:
    """Keeps a CPU copy of the weights whenever the dev accuracy improves (the model LM-BFF selects)."""

    def __init__(self) -> None:
        self.best: float | None = None
        self.state: dict[str, Tensor] | None = None

    def offer(self, model: nn.Module, score: float) -> None:
        if self.best is None or score > self.best:
            self.best = score
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


class ClozeTask:
    """Fine-tune a :class:`PETModel` with cross-entropy over the verbaliser scores (PET, eq. 3), or, given
    ``soft`` labels, any model returning ``(B, C)`` logits on cloze rows; evaluation: dev loss and accuracy.

    With ``aux`` (:class:`~attnkit.training.pet_aux.AuxiliaryLM`), each batch also carries ``aux.ratio``
    unlabelled rows per labelled one, masked afresh (fixed by ``(seed, epoch, batch)``), and the loss is
    ``(1 - alpha) * L_CE + alpha * L_MLM`` (PET, section 3.1)."""

    varying_lengths = True

    def __init__(self, train: Cloze, dev: Cloze | None, *, batch_size: int, pad_id: int, eval_batch_size: int = 64,
                 device: torch.device | str = "cpu", aux: "AuxiliaryLM | None" = None) -> None:
        self.train, self.dev, self.aux = train, dev, aux
        self.batch_size, self.eval_batch_size, self.pad_id, self.device = batch_size, eval_batch_size, pad_id, torch.device(device)
        self.snapshot = BestSnapshot()

    def batches(self, epoch: int, seed: int) -> Iterator[ClozeBatch]:
        batches = bucketed_batches(self.train.lengths(), self.batch_size, bucket_size=50, seed=seed, epoch=epoch)
        for k, index in enumerate(batches):
            b = collate_cloze(self.train, index, self.pad_id)
            if self.aux is not None:
                g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + k)
                b.lm_ids, b.lm_mask, b.lm_positions, b.lm_targets = self.aux.batch(len(index), self.pad_id, g)
            yield b.to(self.device)

    def input_tokens(self, batch: ClozeBatch) -> Tensor:
        return batch.attention_mask.sum()

    def loss(self, model: nn.Module, batch: ClozeBatch) -> tuple[Tensor, Tensor]:
        scores = model(batch.ids, batch.attention_mask, batch.mask_pos)  # (B, C)
        loss, n = classification_loss(scores, batch.targets, ignore_index=-100)
        if self.aux is not None and batch.lm_ids is not None:
            logits = model.mlm(batch.lm_ids, attention_mask=batch.lm_mask, positions=batch.lm_positions).logits  # (R, P, V)
            loss = self.aux.combine(loss, mlm_loss(logits, batch.lm_targets)[0])
        return loss, n

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.dev is None:
            return {}
        loss, scores = cloze_scores(model, self.dev, pad_id=self.pad_id, batch_size=self.eval_batch_size, device=self.device)
        acc = accuracy(self.dev.targets, scores.argmax(-1).tolist())
        self.snapshot.offer(model, acc)
        return {"loss": loss, "accuracy": acc}


def cloze_scores(model: nn.Module, data: Cloze, *, pad_id: int, batch_size: int = 64,
                 device: torch.device | str = "cpu") -> tuple[float, Tensor]:
    """Dev loss over the labelled rows and every row's ``(C,)`` scores, ``(N, C)`` on the CPU in input order."""
    index_batches = sorted_batches(data.lengths(), batch_size)

    def step(index: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        b = collate_cloze(data, index, pad_id).to(torch.device(device))
        scores = model(b.ids, b.attention_mask, b.mask_pos)  # (B, C)
        loss, n = classification_loss(scores, b.targets, ignore_index=-100)
        return loss, n, scores.float().cpu()

    was = model.training
    model.eval()
    with torch.no_grad():
        result = dev_pass(step, index_batches)
    model.train(was)
    out = torch.empty(len(data), result.outputs[0].shape[-1] if result.outputs else 0)
    for index, scores in zip(index_batches, result.outputs):
        out[index] = scores
    return result.loss, out


# -- ensembles and distillation --------------------------------------------------------------------
def ensemble_scores(scores: Sequence[Tensor], weights: Sequence[float] | None = None) -> Tensor:
    """``s(l | x) = sum_p w(p) s_p(l | x) / sum_p w(p)`` (PET, section 3.2); uniform weights by default.

    Args:
        scores: per pattern, ``(N, C)`` scores.
        weights: per pattern, ``w(p) >= 0`` (not all zero).
    """
    w = torch.tensor([1.0] * len(scores) if weights is None else [float(x) for x in weights])
    if (w < 0).any() or float(w.sum()) <= 0:
        raise ConfigError(f"ensemble weights {w.tolist()} must be >= 0 and not all zero")
    stacked = torch.stack([s.float() for s in scores])  # (P, N, C)
    return (w[:, None, None] * stacked).sum(0) / w.sum()  # (N, C)


def calibrated(scores: Tensor, prior_scores: Tensor) -> Tensor:
    """``s_p(l | x) - mean_u s_p(l | u)``: each label word's score less its mean over unlabelled rows ``u`` of the task.

    The mean is the pattern's prior preference for each label word, whatever the input; an untrained head's
    preference for one word can outweigh everything the input says, and the zero-shot prediction is then one
    label for every row. Removing it is contextual calibration (Zhao et al. 2021, "Calibrate Before Use",
    section 4: ``W = diag(p_cf)^-1`` on the probabilities, a subtraction on log-probabilities), with the prior
    estimated from real unlabelled inputs rather than one content-free input. The scores are logits at the mask
    restricted to the label words (:func:`mask_scores`); their log-softmax over the vocabulary differs from them
    by a per-row constant, which changes no argmax.

    Args:
        scores: ``(N, C)`` the rows to classify.
        prior_scores: ``(M, C)`` the same pattern's scores on unlabelled rows.

    Returns:
        ``(N, C)``.
    """
    return scores - prior_scores.mean(0, keepdim=True)


def soft_labels(scores: Tensor, temperature: float = 2.0) -> Tensor:
    """The ensemble's soft labels ``softmax(s / T)`` that the final classifier learns (PET, section 3.2, ``T = 2``)."""
    return torch.softmax(scores.float() / temperature, dim=-1)


def soft_cross_entropy(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of ``(B, C)`` logits against ``(B, C)`` target distributions, ``-sum_c p_c log q_c``:
    the mean over the rows, and the row count (the Trainer's loss convention)."""
    loss = -(targets.float() * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
    return loss, torch.tensor(logits.shape[0], device=logits.device)


class DistillTask(ClozeTask):
    """Train a sequence classifier on unlabelled rows against the ensemble's soft labels; evaluate it on the labelled dev.

    The rows are plain ``[CLS] x [SEP]`` encodings (``data.Encoded`` of :mod:`attnkit.training.finetune`).
    """

    def __init__(self, train, soft: Tensor, dev, *, batch_size: int, pad_id: int, eval_batch_size: int = 64,
                 device: torch.device | str = "cpu") -> None:
        if len(train) != soft.shape[0]:
            raise DataError(f"{len(train)} unlabelled rows but {soft.shape[0]} soft labels")
        self.rows, self.soft, self.dev_rows = train, soft, dev
        self.batch_size, self.eval_batch_size, self.pad_id, self.device = batch_size, eval_batch_size, pad_id, torch.device(device)
        self.snapshot = BestSnapshot()

    def batches(self, epoch: int, seed: int) -> Iterator:
        from attnkit.training.finetune import collate

        for index in bucketed_batches(self.rows.lengths(), self.batch_size, bucket_size=50, seed=seed, epoch=epoch):
            b = collate(self.rows, index, self.pad_id)
            b.targets = self.soft[index]
            yield b.to(self.device)

    def loss(self, model: nn.Module, batch) -> tuple[Tensor, Tensor]:
        logits = model(batch.ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids).logits  # (B, C)
        return soft_cross_entropy(logits, batch.targets)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        from attnkit.training.finetune import dev_logits

        if self.dev_rows is None:
            return {}
        loss, logits = dev_logits(model, self.dev_rows, pad_id=self.pad_id, batch_size=self.eval_batch_size, device=self.device)
        acc = accuracy(list(self.dev_rows.targets), [int(x.argmax()) for x in logits])
        self.snapshot.offer(model, acc)
        return {"loss": loss, "accuracy": acc}


# -- the LM-BFF protocol ---------------------------------------------------------------------------
def lmbff_sample(labels: Sequence[str], k: int, seed: int, *, dev: bool = True) -> tuple[list[int], list[int]]:
    """K training examples per class and (``dev``) a dev set of K per class, disjoint, drawn with ``seed`` (Gao et al. 2021, section 3).

    Args:
        labels: the label of every example of the pool.
        k: examples per class.
        seed: the sampling seed; the same seed gives the same sets.

    Returns:
        The indices of the training and of the dev examples, each sorted by class then draw.

    Raises:
        DataError: a class with fewer than ``k`` (``2k`` with a dev set) examples.
    """
    need = 2 * k if dev else k
    by_class: dict[str, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    rng = random.Random(seed)
    train, held = [], []
    for y in sorted(by_class):
        pool = by_class[y]
        if len(pool) < need:
            raise DataError(f"label {y!r} has {len(pool)} examples; {k} shots per class{' plus a dev set of as many' if dev else ''} "
                            f"need {need}")
        drawn = rng.sample(pool, need)
        train.extend(drawn[:k])
        held.extend(drawn[k:])
    return train, held


def subset(data: ClassificationData, index: Sequence[int], *, keep_labels: bool = True) -> ClassificationData:
    """The rows ``index`` of ``data`` (without labels when ``keep_labels`` is false)."""
    return ClassificationData(
        texts=[data.texts[i] for i in index],
        pairs=[data.pairs[i] for i in index] if data.pairs is not None else None,
        labels=[data.labels[i] for i in index] if data.labels is not None and keep_labels else None,
        source=data.source,
    )


__all__ = ["Cloze", "ClozeTask", "DistillTask", "PETModel", "Pattern", "cloze_scores", "encode_cloze", "ensemble_scores",
           "lmbff_sample", "mask_scores", "mlm_of", "parse_verbalizer", "soft_cross_entropy", "soft_labels",
           "subset", "verbalizer_ids"]
