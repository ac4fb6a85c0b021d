"""Causal language modelling on one token stream, as a task for :class:`attnkit.training.Trainer`.

Training batches are windows of ``context + 1`` tokens at random offsets of the training
part (as nanoGPT samples them); the inputs are the first ``context`` tokens and the targets
the last ``context``. An "epoch" is ``len(train) // (batch_size * context)`` batches whose
offsets are fixed by ``(seed, epoch)``, so a resumed run sees the same data.

Evaluation is the mean next-token loss over non-overlapping ``context``-token windows of
the validation part (deterministic, unlike nanoGPT's random estimate), then an optional
sample of text printed through ``log``.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from attnkit.attention.adaptive_span import span_penalty, spans
from attnkit.data.transfer import to_device
from attnkit.objectives.causal_lm import causal_lm_loss
from attnkit.objectives.chunked_ce import head_loss
from attnkit.training.dev import dev_pass


def window_loss(model: nn.Module, batch: Tensor, loss_chunk: int = 0) -> tuple[Tensor, int]:
    """The mean next-token loss of windows ``batch: (B, T+1)`` (inputs ``[:, :-1]``, targets ``[:, 1:]``) and the
    target count; with ``loss_chunk`` the output layer and loss run chunk by chunk (:func:`head_loss`)."""
    if loss_chunk:
        loss, _ = head_loss(model, batch[:, :-1], batch[:, 1:], chunk=loss_chunk)
    else:
        loss, _ = causal_lm_loss(model(batch[:, :-1]).logits, batch[:, 1:])  # logits (B, T, V)
    return loss, batch[:, 1:].numel()  # every target counts; a Python int needs no device sync


class LMTask:
    """Next-token prediction on ``train``/``valid`` token tensors (1-D, int64).

    Args:
        sample: ``model -> text`` run after each evaluation; its text is passed to ``log``.
        max_eval_windows: evaluate on at most this many validation windows.
        loss_chunk: > 0: the output layer and loss run that many tokens at a time, the full logits
            never materialised (:func:`~attnkit.objectives.chunked_ce.head_loss`); 0: plain.
    """

    def __init__(
        self,
        train: Tensor,
        valid: Tensor,
        *,
        context: int,
        batch_size: int,
        device: torch.device | str = "cpu",
        sample: Callable[[nn.Module], str] | None = None,
        log: Callable[[str], None] = print,
        max_eval_windows: int = 4096,
        loss_chunk: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.loss_chunk = loss_chunk
        self.train, self.valid = train.to(self.device), valid.to(self.device)
        self.host_train = train.cpu()  # what DataLoader workers cut windows from (a worker cannot read CUDA memory)
        self._epoch_starts: tuple[tuple[int, int], list[Tensor]] | None = None
        self.context, self.batch_size = context, batch_size
        self.sample, self.log, self.max_eval_windows = sample, log, max_eval_windows
        self.offsets = torch.arange(context + 1, device=self.device)  # (T+1,)

    def batches(self, epoch: int, seed: int) -> Iterator[Tensor]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        per_epoch = max(1, len(self.train) // (self.batch_size * self.context))
        for _ in range(per_epoch):
            starts = torch.randint(0, len(self.train) - self.context, (self.batch_size,), generator=g)  # (B,)
            # through pinned memory: a copy from pageable memory would wait for the steps queued on the GPU
            yield self.train[to_device(starts, self.device)[:, None] + self.offsets]  # (B, T+1)

    # DataLoader workers (attnkit.data.workers): batch k of batches(), cut on the CPU
    def _starts(self, epoch: int, seed: int) -> list[Tensor]:
        """The window offsets of every batch of the epoch, drawn as :meth:`batches` draws them (kept for the last epoch)."""
        if self._epoch_starts is None or self._epoch_starts[0] != (epoch, seed):
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            n = self.batch_count(epoch, seed)
            self._epoch_starts = (epoch, seed), [torch.randint(0, len(self.train) - self.context, (self.batch_size,), generator=g)
                                                 for _ in range(n)]
        return self._epoch_starts[1]

    def batch_count(self, epoch: int, seed: int) -> int:
        return max(1, len(self.train) // (self.batch_size * self.context))

    def make_batch(self, epoch: int, seed: int, index: int) -> Tensor:
        """The windows of batch ``index`` of :meth:`batches`: ``(B, T+1)`` on the CPU. The offsets of an
        epoch come from one generator seeded by ``(seed, epoch)``, replayed up to the batch (cheap beside the step)."""
        starts = self._starts(epoch, seed)[index]  # (B,)
        return self.host_train[starts[:, None] + torch.arange(self.context + 1)]  # (B, T+1)

    def on_device(self, batch: Tensor) -> Tensor:
        return to_device(batch, self.device)  # type: ignore[return-value]

    def input_tokens(self, batch: Tensor) -> int:
        """The context tokens fed to the model: ``B * T`` of the ``(B, T + 1)`` windows."""
        return batch[:, :-1].numel()

    def loss(self, model: nn.Module, batch: Tensor) -> tuple[Tensor, int]:
        loss, n = self.lm_loss(model, batch)
        return loss + span_penalty(model), n  # adaptive attention span's L1 term (0 without such kernels)

    def lm_loss(self, model: nn.Module, batch: Tensor) -> tuple[Tensor, int]:
        """The mean next-token loss of a batch and its target count."""
        return window_loss(model, batch, self.loss_chunk)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        n = min((len(self.valid) - 1) // self.context, self.max_eval_windows)
        starts = torch.arange(n, device=self.device) * self.context  # (n,)
        windows = (self.valid[starts[i : i + self.batch_size, None] + self.offsets] for i in range(0, n, self.batch_size))  # (b, T+1)
        out = {"loss": dev_pass(lambda w: self.lm_loss(model, w), windows).loss}  # the Trainer prints it
        out.update({k: v for k, v in spans(model).items() if k != "spans"})  # learned spans (adaptive_span kernels)
        if self.sample is not None:
            self.log(self.sample(model))
        return out
