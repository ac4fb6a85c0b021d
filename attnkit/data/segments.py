"""Consecutive segments of a token stream, and language modelling with Transformer-XL memory.

Transformer-XL (Dai et al. 2019, section 3.2) trains on a stream cut into ``B`` contiguous rows
read side by side: the batch of step t + 1 continues, row by row, the batch of step t, so the
memory a layer keeps from step t (:mod:`attnkit.attention.memory`) is the text just before row
i of step t + 1. :class:`StreamSegments` arranges the stream so; :class:`XLLMTask` is the
language-modelling task of :class:`attnkit.training.Trainer` that carries the memory from one
training batch to the next and evaluates with and without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from attnkit.attention.adaptive_span import span_penalty, spans
from attnkit.errors import DataError
from attnkit.objectives.causal_lm import causal_lm_loss


@dataclass
class Segment:
    """One batch of segments: ``tokens: (B, T + 1)`` (inputs ``[:, :-1]``, targets ``[:, 1:]``);
    ``first``: the rows start a stream (the memory is reset before it)."""

    tokens: Tensor
    first: bool


class StreamSegments:
    """A 1-D token stream as ``batch_size`` contiguous rows, read ``segment`` tokens at a time.

    The stream (from ``start``) is cut into ``batch_size`` rows of ``n`` tokens each (the rest is
    dropped); step t yields ``rows[:, t T : t T + T + 1]``, so the last token of a row at step t
    is the first of that row at step t + 1 (it is a target at t, an input at t + 1).

    Args:
        tokens: the stream, 1-D int64.
        batch_size: rows B read side by side.
        segment: tokens T per row and step.
        start: tokens skipped at the front (an epoch may start elsewhere).

    Raises:
        DataError: a stream too short for one segment per row.
    """

    def __init__(self, tokens: Tensor, batch_size: int, segment: int, start: int = 0) -> None:
        n = (len(tokens) - start) // batch_size
        if n < segment + 1:
            raise DataError(f"{len(tokens) - start} tokens cannot fill {batch_size} rows of one segment of {segment} "
                            f"(+1 target); use a smaller batch or segment")
        self.rows = tokens[start : start + n * batch_size].view(batch_size, n)  # (B, n)
        self.segment = segment
        self.steps = (n - 1) // segment

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Segment]:
        t = self.segment
        for s in range(self.steps):
            yield Segment(self.rows[:, s * t : s * t + t + 1], first=s == 0)  # (B, T + 1)


def check_memory(model: Any, train: Any, data: Any) -> None:
    """Refuse a segment and memory a GPT config cannot serve, before anything is built.

    Args:
        model: the :class:`~attnkit.models.gpt.GPTConfig`.
        train: the training config (a step recorded as a CUDA graph cannot carry the memory).
        data: the text data config (``segment``, ``mem_len``, ``eval_mem_len``, ``model``, ``tokens``).

    Raises:
        ConfigError: positions that do not follow the memory, keys past the context, or a data source
            other than a text file.
    """
    from attnkit.errors import ConfigError

    if data.model or data.tokens:
        raise ConfigError("data.segment trains a new GPT on data.text; it does not read data.model or data.tokens")
    if (data.mem_len or data.eval_mem_len) and not model.attention.position.adds_bias:
        raise ConfigError(f"data.mem_len needs relative positions inside attention (e.g. --set model.attention.position.kind="
                          f"xl_relative), not model.attention.position.kind={model.attention.position.kind!r}")
    longest = max(data.mem_len, data.eval_mem_len or 0) + data.segment
    if longest > model.context:
        raise ConfigError(f"data.mem_len={data.mem_len} (data.eval_mem_len={data.eval_mem_len}) plus data.segment={data.segment} "
                          f"is {longest} keys, more than model.context={model.context}; raise model.context or shorten them")
    if train.execution.cuda_graphs:
        raise ConfigError("data.segment carries a memory from step to step, which a step recorded as a CUDA graph cannot "
                          "replay; set train.execution.cuda_graphs=false")


class XLLMTask:
    """Next-token prediction over consecutive segments, with a memory of ``mem_len`` positions per layer.

    Training batches are :class:`StreamSegments` of the training part; each epoch starts
    ``(seed + epoch) * 7919 % segment`` tokens in, so segments' edges move between epochs, and
    resets the memory. ``evaluate`` reads the validation part the same way and reports ``loss``
    with a memory of ``eval_mem_len`` positions and ``loss_no_memory`` of the same segments
    without one (every segment then sees only itself). The validation stream is cut into as many
    rows (at least ``batch_size``) as keep each row to ``max_eval_steps`` segments; the first
    segment of each row has no memory.

    Args:
        train: training tokens, 1-D.
        valid: validation tokens, 1-D.
        segment: tokens T per row and step.
        mem_len: memory positions M carried between training segments.
        batch_size: rows B.
        eval_mem_len: memory at evaluation (default ``mem_len``).
        device: where batches go.
        sample: ``model -> text`` run after each evaluation; its text goes to ``log``.
        log: where to print.
        max_eval_steps: segments per validation row at most.
    """

    def __init__(self, train: Tensor, valid: Tensor, *, segment: int, mem_len: int, batch_size: int,
                 eval_mem_len: int | None = None, device: torch.device | str = "cpu",
                 sample: Callable[[nn.Module], str] | None = None, log: Callable[[str], None] = print,
                 max_eval_steps: int = 64) -> None:
        self.device = torch.device(device)
        self.train, self.valid = train.to(self.device), valid.to(self.device)
        self.segment, self.mem_len, self.batch_size = segment, mem_len, batch_size
        self.eval_mem_len = mem_len if eval_mem_len is None else eval_mem_len
        self.sample, self.log = sample, log
        self.memories: list[Any] | None = None
        wide = -(-len(self.valid) // (segment * max_eval_steps))  # rows keeping each to max_eval_steps segments
        self.eval_rows = max(1, min(max(batch_size, wide), (len(self.valid) - 1) // (segment + 1)))
        StreamSegments(self.train, batch_size, segment)  # refuse too little data now
        StreamSegments(self.valid, self.eval_rows, segment)

    def batches(self, epoch: int, seed: int) -> Iterator[Segment]:
        start = (seed + epoch) * 7919 % self.segment
        if (len(self.train) - start) // self.batch_size < self.segment + 1:
            start = 0
        yield from StreamSegments(self.train, self.batch_size, self.segment, start)

    def input_tokens(self, batch: Segment) -> int:
        """The tokens fed to the model: ``B * T`` (the memory is not fed again)."""
        return batch.tokens[:, :-1].numel()

    def loss(self, model: nn.Module, batch: Segment) -> tuple[Tensor, int]:
        if batch.first or self.memories is None:
            self.memories = model.new_memories(self.mem_len)  # type: ignore[operator]
        logits = model(batch.tokens[:, :-1], caches=self.memories).logits  # (B, T, V)
        loss, _ = causal_lm_loss(logits, batch.tokens[:, 1:])
        return loss + span_penalty(model), batch.tokens[:, 1:].numel()  # adaptive span's L1 term (0 without it)

    @torch.no_grad()
    def stream_loss(self, model: nn.Module, mem_len: int, rows: int | None = None) -> float:
        """Mean next-token loss over the validation segments with a memory of ``mem_len`` (0: none).

        Args:
            model: a GPT whose positions follow the memory.
            mem_len: memory positions carried from segment to segment.
            rows: rows the validation stream is cut into (default ``eval_rows``; 1: one stream).
        """
        was_training = model.training
        model.eval()
        memories = model.new_memories(mem_len)  # type: ignore[operator]
        total, count = torch.zeros((), dtype=torch.float64, device=self.device), 0
        for batch in StreamSegments(self.valid, rows or self.eval_rows, self.segment):
            logits = model(batch.tokens[:, :-1], caches=memories).logits  # (b, T, V)
            loss, _ = causal_lm_loss(logits.float(), batch.tokens[:, 1:])
            n = batch.tokens[:, 1:].numel()
            total += loss.double() * n
            count += n
        model.train(was_training)
        return float(total / max(count, 1))

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out = {"loss": self.stream_loss(model, self.eval_mem_len), "loss_no_memory": self.stream_loss(model, 0)}
        out.update({k: v for k, v in spans(model).items() if k != "spans"})  # learned spans (adaptive_span kernels)
        if self.sample is not None:
            self.log(self.sample(model))
        return out
