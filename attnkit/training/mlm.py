"""BERT pretraining (masked LM + NSP/SOP) as a task for :class:`attnkit.training.Trainer`.

Each epoch builds its sentence pairs anew from the training documents with a random
generator fixed by ``(seed, epoch)`` (:func:`attnkit.data.pretraining.make_pairs`), shuffles
them, and masks every batch as it is produced (dynamic masking, Liu et al. 2019 section 4.1)
with a generator fixed by ``(seed, epoch, batch)``, so a resumed run sees the same data.

The loss is Devlin et al. 2019's sum (appendix A.2): mean masked-LM cross-entropy over the
chosen tokens plus mean NSP/SOP cross-entropy over the batch. Evaluation uses the held-out
documents with fixed pairs and fixed masks and reports ``mlm_loss``, ``mlm_accuracy`` (over
the chosen tokens), ``nsp_accuracy`` or ``sop_accuracy``, and their sum ``loss``.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.data.pretraining import Document, Pair, PairTask, PretrainingBatch, collate, make_pairs
from attnkit.errors import DataError
from attnkit.objectives.mlm import IGNORE, MaskingConfig, mask_tokens, prediction_slots
from attnkit.objectives.pretraining import pretraining_loss
from attnkit.objectives.span_boundary import span_boundaries, span_boundary_loss
from attnkit.training.dev import dev_pass


def mask_batch(b: PretrainingBatch, masking: MaskingConfig, *, mask_id: int, random_ids: Tensor, generator: torch.Generator,
               slots: bool = True) -> PretrainingBatch:
    """Mask ``b`` (:func:`~attnkit.objectives.mlm.mask_tokens`); with ``slots``, add the prediction slots the output
    layer runs at and, where ``masking.span_boundary`` asks for it, the span boundary objective's inputs there."""
    out = mask_tokens(b.ids, b.maskable, mask_id=mask_id, random_ids=random_ids, config=masking, word_ids=b.word_index,
                      generator=generator, return_spans=masking.span_boundary)
    b.ids, b.mlm_labels = out[0], out[1]
    if not slots:
        return b
    b.mlm_positions, b.mlm_targets = prediction_slots(b.mlm_labels, expected=masking.select_prob)
    if masking.span_boundary:
        span_index = out[2]
        b.sbo_left, b.sbo_right, b.sbo_offset = (x.gather(1, b.mlm_positions) for x in span_boundaries(span_index))
        in_span = span_index.gather(1, b.mlm_positions) >= 0
        b.sbo_targets = torch.where(in_span, b.mlm_targets, torch.full_like(b.mlm_targets, IGNORE))
    return b


def pretraining_forward(model: nn.Module, batch: PretrainingBatch) -> tuple[Tensor, Tensor, Tensor, Any]:
    """``(total loss, masked-LM loss, chosen tokens, the model's output)`` of one batch: masked LM, the sentence-pair
    task and, with span boundaries in the batch, SpanBERT's ``L_MLM + L_SBO``. The ``mlm_logits`` are ``(B, P, V)`` at
    the batch's ``mlm_positions`` when it has them (:func:`prediction_targets`), else ``(B, T, V)``."""
    kw: dict[str, Any] = {"positions": batch.mlm_positions} if batch.mlm_positions is not None else {}
    if batch.sbo_left is not None:
        kw["boundaries"] = (batch.sbo_left, batch.sbo_right, batch.sbo_offset)
    out = model(batch.ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids, **kw)
    total, mlm, n = pretraining_loss(out.mlm_logits, prediction_targets(batch), out.pair_logits, batch.pair_labels)
    if getattr(out, "sbo_logits", None) is not None:
        total = total + span_boundary_loss(out.sbo_logits, batch.sbo_targets)
    return total, mlm, n, out


def prediction_targets(batch: PretrainingBatch) -> Tensor:
    """What the output layer's rows predict: ``mlm_targets`` (B, P) where the batch has prediction slots, else ``mlm_labels`` (B, T)."""
    return batch.mlm_targets if batch.mlm_positions is not None else batch.mlm_labels  # type: ignore[return-value]


class PretrainingTask:
    """Masked-LM (+ NSP/SOP) pretraining over tokenized documents.

    Args:
        docs: every tokenized document (sentences already cut to half a sequence).
        train_ids, valid_ids: which documents train and which are held out.
        tokenizer: a :class:`~attnkit.data.wordpiece.WordPieceTokenizer` (special ids, [MASK], random ids).
        log: where evaluation results are printed.
    """

    varying_lengths = True  # batches padded to their longest row
    gathers_predictions = True  # batches carry prediction_slots and the output layer runs at them alone

    def __init__(
        self,
        docs: list[Document],
        train_ids: Sequence[int],
        valid_ids: Sequence[int],
        *,
        tokenizer: Any,
        max_seq_len: int,
        batch_size: int,
        pair_task: PairTask = "nsp",
        masking: MaskingConfig = MaskingConfig(),
        short_seq_prob: float = 0.1,
        max_eval_pairs: int = 2048,
        device: torch.device | str = "cpu",
        log: Callable[[str], None] = print,
    ) -> None:
        self.docs, self.train_ids, self.valid_ids = docs, list(train_ids), list(valid_ids)
        self.tok, self.max_seq_len, self.batch_size = tokenizer, max_seq_len, batch_size
        self.pair_task, self.masking, self.short_seq_prob = pair_task, masking, short_seq_prob
        self.device, self.log = torch.device(device), log
        if tokenizer.mask_id is None:
            raise DataError("the tokenizer has no [MASK] token; masked-LM pretraining needs one")
        self.random_ids = tokenizer.random_ids()  # (N,) what a 10% random replacement draws from
        self.special_ids = tokenizer.special_ids
        # NotNext draws from the same split when it has two documents, else from all of them
        self.train_pool = self.train_ids if len(self.train_ids) >= 2 else list(range(len(docs)))
        valid_pool = self.valid_ids if len(self.valid_ids) >= 2 else list(range(len(docs)))
        valid = make_pairs(docs, max_seq_len=max_seq_len, pair_task=pair_task, short_seq_prob=0.0,
                           rng=random.Random(12345), doc_ids=self.valid_ids, random_pool=valid_pool)
        self.valid_pairs = valid[:max_eval_pairs]
        self._eval_batches: list[PretrainingBatch] | None = None

    # -- data -----------------------------------------------------------------------------------
    def epoch_pairs(self, epoch: int, seed: int) -> list[Pair]:
        """The training pairs of one epoch, shuffled; fixed by ``(seed, epoch)``."""
        rng = random.Random(seed * 1_000_003 + epoch)
        pairs = make_pairs(self.docs, max_seq_len=self.max_seq_len, pair_task=self.pair_task, short_seq_prob=self.short_seq_prob,
                           rng=rng, doc_ids=self.train_ids, random_pool=self.train_pool)
        rng.shuffle(pairs)
        return pairs

    def _batch(self, pairs: Sequence[Pair], generator: torch.Generator) -> PretrainingBatch:
        t = self.tok
        b = collate(pairs, cls_id=t.cls_id, sep_id=t.sep_id, pad_id=t.pad_id, special_ids=self.special_ids,
                    with_labels=self.pair_task != "none")
        return mask_batch(b, self.masking, mask_id=t.mask_id, random_ids=self.random_ids, generator=generator,
                          slots=self.gathers_predictions)

    def batches(self, epoch: int, seed: int) -> Iterator[PretrainingBatch]:
        pairs = self.epoch_pairs(epoch, seed)
        bs = self.batch_size
        n_batches = len(pairs) // bs or (1 if pairs else 0)  # the last partial batch is dropped, unless it is the only one
        for k in range(n_batches):
            g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + k)
            yield self._batch(pairs[k * bs : (k + 1) * bs], g).to(self.device)

    # -- batches built in DataLoader workers (attnkit.data.workers): batch k of batches(), alone --------
    def _cached_pairs(self, epoch: int, seed: int) -> list[Pair]:
        """:meth:`epoch_pairs`, kept for the epoch last asked (each worker process keeps its own)."""
        if getattr(self, "_pairs_key", None) != (epoch, seed):
            self._pairs_key, self._pairs = (epoch, seed), self.epoch_pairs(epoch, seed)
        return self._pairs

    def batch_count(self, epoch: int, seed: int) -> int:
        """The number of batches :meth:`batches` yields for ``(epoch, seed)``."""
        pairs = self._cached_pairs(epoch, seed)
        return len(pairs) // self.batch_size or (1 if pairs else 0)

    def make_batch(self, epoch: int, seed: int, index: int) -> PretrainingBatch:
        """Batch ``index`` of :meth:`batches`, on the CPU: its masks drawn from a generator seeded by ``(seed, epoch, index)``."""
        bs = self.batch_size
        g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 100_003 + index)
        return self._batch(self._cached_pairs(epoch, seed)[index * bs : (index + 1) * bs], g)

    def on_device(self, batch: PretrainingBatch) -> PretrainingBatch:
        return batch.to(self.device)

    # -- loss and evaluation ------------------------------------------------------------------------
    def forward(self, model: nn.Module, batch: PretrainingBatch) -> tuple[Tensor, Tensor, Tensor, Any]:
        """The loss terms and the model's output (:func:`pretraining_forward`)."""
        return pretraining_forward(model, batch)

    def input_tokens(self, batch: PretrainingBatch) -> Tensor:
        """The non-padding tokens of the pairs (all of them are read, not only the masked ones)."""
        return batch.attention_mask.sum()

    def loss(self, model: nn.Module, batch: PretrainingBatch) -> tuple[Tensor, Tensor]:
        total, _, n, _ = self.forward(model, batch)
        return total, n  # the loop weights by n (chosen tokens)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if not self.valid_pairs:
            return {}
        if self._eval_batches is None:
            g = torch.Generator().manual_seed(54321)  # the same masks at every evaluation
            self._eval_batches = [self._batch(self.valid_pairs[i : i + self.batch_size], g).to(self.device)
                                  for i in range(0, len(self.valid_pairs), self.batch_size)]

        def step(b: PretrainingBatch) -> tuple[Tensor, Tensor, Tensor]:
            _, mlm, n, out = self.forward(model, b)
            labels = prediction_targets(b)
            picked = labels != IGNORE  # (B, T) or (B, P)
            sums = [(out.mlm_logits.argmax(-1)[picked] == labels[picked]).sum().float()]  # MLM hits
            sbo = getattr(out, "sbo_logits", None)
            if sbo is not None:  # SBO loss sum and its tokens
                sbo_n = (b.sbo_targets != IGNORE).sum().float()
                sums += [span_boundary_loss(sbo, b.sbo_targets) * sbo_n, sbo_n]
            if out.pair_logits is not None:  # pair loss sum, pair hits
                sums += [F.cross_entropy(out.pair_logits.float(), b.pair_labels, reduction="sum"),
                         (out.pair_logits.argmax(-1) == b.pair_labels).sum().float()]
            return mlm, n, torch.stack(sums)

        result = dev_pass(step, self._eval_batches)
        hits, *rest = torch.stack(result.outputs).sum(0).tolist()
        sbo_sum, sbo_n = (rest.pop(0), rest.pop(0)) if self.masking.span_boundary else (0.0, 0.0)
        pair_sum, pair_hits = rest if rest else (0.0, 0.0)
        rows = sum(b.ids.shape[0] for b in self._eval_batches)
        metrics = {"mlm_loss": result.loss, "mlm_accuracy": hits / max(result.count, 1)}
        loss = metrics["mlm_loss"]
        if self.masking.span_boundary:
            metrics["sbo_loss"] = sbo_sum / max(sbo_n, 1.0)
            loss += metrics["sbo_loss"]
        if self.pair_task != "none":
            metrics[f"{self.pair_task}_loss"] = float(pair_sum) / rows
            metrics[f"{self.pair_task}_accuracy"] = float(pair_hits) / rows
            loss += metrics[f"{self.pair_task}_loss"]
        metrics["loss"] = loss
        return metrics
