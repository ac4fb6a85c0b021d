"""Tasks tell the training loop what a batch is, what the loss is and how to evaluate.

A task is any object with

* ``batches(epoch, seed) -> Iterator[batch]``: the micro-batches of one epoch, in an
  order fixed by ``(seed, epoch)`` so that a resumed run sees the same data;
* ``loss(model, batch) -> (mean loss over tokens, number of tokens)``;
* ``evaluate(model) -> dict[str, float]`` (the model is in eval mode, gradients off);
* optionally ``input_tokens(batch) -> int | Tensor``: the tokens the batch feeds the model,
  padding excluded, for the Trainer's tokens per second (without it the loss's count is used).
* optionally ``set_step(step)``: called by the Trainer before each optimizer step with the
  number of steps done (a loss that follows a schedule, as scheduled sampling, reads it).
* optionally ``batch_count``, ``make_batch`` and ``on_device``: batch ``index`` of an epoch built
  alone, so that ``train.execution.workers`` processes can build it (:mod:`attnkit.data.workers`).
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import torch
from torch import Tensor, nn

from attnkit.data.seq2seq import Seq2SeqBatch
from attnkit.data.tokenizer import PAD_ID
from attnkit.objectives import seq2seq_loss
from attnkit.training.dev import dev_pass


class Task(Protocol):
    """What :class:`~attnkit.training.loop.Trainer` trains on. A task may also set
    ``varying_lengths = True`` (its batches change length from step to step; see the Trainer)."""

    def batches(self, epoch: int, seed: int) -> Iterator[Any]: ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...


class Seq2SeqTask:
    """Teacher-forced encoder-decoder training with label smoothing (paper section 5.4).

    Evaluation reports the validation loss (no smoothing) and, when held-out source/answer
    strings and a tokenizer are given, greedy-decoding exact match. ``train``/``valid`` are
    :class:`~attnkit.data.seq2seq.PairDataset` s batched by ``batch_size`` examples; subclasses
    that batch otherwise override :meth:`train_batches` and :meth:`valid_batches`.
    """

    varying_lengths = True  # token-count batches: a new source/target length at most steps

    def __init__(
        self,
        train: Any,
        *,
        batch_size: int,
        label_smoothing: float = 0.1,
        valid: Any = None,
        heldout: tuple[list[str], list[str]] | None = None,
        tokenizer: Any = None,
        device: torch.device | str = "cpu",
        exposure: Any = None,
    ) -> None:
        from attnkit.training.exposure import ExposureConfig

        self.train, self.valid, self.heldout, self.tokenizer = train, valid, heldout, tokenizer
        self.batch_size, self.label_smoothing = batch_size, label_smoothing
        self.device = torch.device(device)
        self.exposure: ExposureConfig = exposure if exposure is not None else ExposureConfig()
        self.step = 0  # the optimizer step, set by the Trainer (the scheduled-sampling decay reads it)

    def set_step(self, step: int) -> None:
        self.step = step

    def train_batches(self, epoch: int, seed: int) -> Iterator[Seq2SeqBatch]:
        """The training batches of one epoch, on the CPU (subclasses batch differently)."""
        return self.train.batches(self.batch_size, epoch=epoch, seed=seed)

    def valid_batches(self) -> Iterator[Seq2SeqBatch]:
        """The validation batches in a fixed order, on the CPU."""
        assert self.valid is not None
        return self.valid.batches(self.batch_size, shuffle=False)

    def batches(self, epoch: int, seed: int) -> Iterator[Seq2SeqBatch]:
        for b in self.train_batches(epoch, seed):
            yield b.to(self.device)

    def input_tokens(self, batch: Seq2SeqBatch) -> Tensor:
        """Non-padding source tokens plus decoder input tokens (on the device: no host sync)."""
        return (batch.src != PAD_ID).sum() + (batch.tgt_in != PAD_ID).sum()

    def loss(self, model: nn.Module, batch: Seq2SeqBatch, epsilon: float | None = None) -> tuple[Tensor, Tensor]:
        """Label-smoothed cross-entropy of the gold targets; in training mode the decoder reads the
        inputs ``exposure`` chooses (:mod:`attnkit.training.exposure`), in eval mode the gold ones."""
        from attnkit.training import exposure as xb

        eps = self.label_smoothing if epsilon is None else epsilon
        pad_id = model.config.pad_id
        kind = self.exposure.kind if model.training else "none"
        if kind == "adversarial":
            return xb.adversarial_loss(model, batch.src, batch.tgt_in,
                                       lambda logits: seq2seq_loss(logits, batch.tgt_out, epsilon=eps, pad_id=pad_id), self.exposure.epsilon)
        tgt_in = batch.tgt_in
        if kind in ("scheduled", "self_feed"):
            tgt_in = xb.two_pass_inputs(model, batch.src, tgt_in, xb.gold_probability(self.exposure, self.step), pad_id)
        logits = model(batch.src, tgt_in).logits  # (B, Tt, V)
        return seq2seq_loss(logits, batch.tgt_out, epsilon=eps, pad_id=pad_id)

    def validation_loss(self, model: nn.Module) -> float:
        """Cross-entropy per target token on the validation set, without label smoothing."""
        return dev_pass(lambda b: self.loss(model, b.to(self.device), epsilon=0.0), self.valid_batches()).loss

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.valid is not None:
            out["loss"] = self.validation_loss(model)
        if self.heldout is not None and self.tokenizer is not None:
            inputs, answers = self.heldout
            preds = translate_strings(model, self.tokenizer, inputs, device=self.device, batch_size=256)
            out["exact_match"] = sum(p == a for p, a in zip(preds, answers)) / max(len(answers), 1)
        return out


@torch.no_grad()
def translate_strings(
    model: nn.Module, tokenizer: Any, inputs: list[str], *, device: torch.device | str = "cpu", batch_size: int = 64, beam_size: int = 1
) -> list[str]:
    """Tokenize, decode (greedy or beam search, KV-cached) and detokenize a list of strings."""
    from attnkit.data.batching import pad
    from attnkit.generation import beam_search, greedy_decode

    was_training = model.training
    model.eval()
    outs: list[str] = []
    for i in range(0, len(inputs), batch_size):
        chunk = inputs[i : i + batch_size]
        src = pad([tokenizer.encode(s).ids for s in chunk], model.config.pad_id).to(device)
        if beam_size > 1:
            ids = beam_search(model, src, beam_size=beam_size)
        else:
            ids = greedy_decode(model, src)
        outs.extend(tokenizer.decode([t for t in row if t != model.config.pad_id]) for row in ids.tolist())
    model.train(was_training)
    return outs
