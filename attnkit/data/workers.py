"""Training batches built in ``torch.utils.data.DataLoader`` worker processes (``train.execution.workers``).

A task that tokenises, cuts or masks its batches as it makes them (masked-LM pretraining with
BERT's 80/10/10 masking, windows read from a token file) can hand that work to ``N`` worker
processes, which build the next batches while the model trains on the current one (each worker
keeps ``prefetch`` batches ready). Such a task offers, besides ``batches(epoch, seed)``:

* ``batch_count(epoch, seed) -> int``: how many batches epoch ``epoch`` holds;
* ``make_batch(epoch, seed, index) -> batch``: batch ``index`` of ``epoch``, on the CPU, built
  from ``(seed, epoch, index)`` alone: its random draws (window offsets, pairs, masks) come from
  generators seeded by those numbers, never from a random state shared between batches, so a
  worker builds any batch without the ones before it, and builds exactly the batch the
  in-process ``batches`` yields at that place;
* ``on_device(batch) -> batch``: the batch moved to the training device (in the main process).

The order: the :class:`~attnkit.training.loop.Trainer` walks the global sequence of batches,
epoch after epoch, from its saved position; of every step's ``grad_accum * P`` micro-batches
process ``r`` of ``P`` takes those at positions ``r, r + P, ...`` (:mod:`attnkit.training.distributed`).
A batch's place in that sequence is a function of the step, the micro-step and the rank, and its
seed is a function of ``(seed, epoch, index)``: so each process asks its own workers for its own
batches only, the batches are those of one process with ``workers=0``, and a run resumed at
step ``s`` gets the batches the uninterrupted run got after step ``s``. The loader keeps its
output in the order asked (``in_order``), whichever worker finishes first.

Workers start by ``fork`` where the platform has it (the task, with its tokenizer and
memory-mapped file, is inherited, not pickled); each runs torch on one thread.
"""

from __future__ import annotations

import multiprocessing
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset

from attnkit.errors import ConfigError, DataError

@runtime_checkable
class WorkerTask(Protocol):
    """A task whose batches :func:`worker_batches` can build in worker processes."""

    def batch_count(self, epoch: int, seed: int) -> int: ...

    def make_batch(self, epoch: int, seed: int, index: int) -> Any: ...

    def on_device(self, batch: Any) -> Any: ...


def check_worker_task(task: Any, workers: int) -> None:
    """Refuse ``train.execution.workers > 0`` for a task that builds its batches only in process.

    Raises:
        ConfigError: ``task`` lacks ``batch_count``, ``make_batch`` or ``on_device``.
    """
    if workers > 0 and not isinstance(task, WorkerTask):
        raise ConfigError(f"train.execution.workers={workers} is not supported by {type(task).__name__}: its batches are "
                          "built in the training process only; leave train.execution.workers at 0")


def positions(count: Callable[[int], int], epoch: int, index: int) -> Iterator[tuple[int, int]]:
    """The global ``(epoch, index)`` of every batch from ``(epoch, index)`` on, epoch after epoch, forever.

    Args:
        count: ``epoch -> number of batches`` of that epoch.
        epoch: the epoch to start in.
        index: the first batch of it (``count(epoch)``: start with the next epoch).

    Raises:
        DataError: an epoch holds no batches.
    """
    while True:
        n = count(epoch)
        if n < 1:
            raise DataError("the training data produced no batches; is the dataset empty?")
        for i in range(index, n):
            yield epoch, i
        epoch, index = epoch + 1, 0


class _Batches(Dataset):
    """``dataset[(epoch, index)]``: the task's batch there (called in a worker)."""

    def __init__(self, task: WorkerTask, seed: int) -> None:
        self.task, self.seed = task, seed

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        return self.task.make_batch(epoch, self.seed, index)


class _OwnKeys:
    """The keys of the batches process ``rank`` of ``world`` takes, from ``(epoch, index)`` on (the sampler)."""

    def __init__(self, count: Callable[[int], int], epoch: int, index: int, rank: int, world: int) -> None:
        self.count, self.epoch, self.index, self.rank, self.world = count, epoch, index, rank, world

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for c, key in enumerate(positions(self.count, self.epoch, self.index)):
            if c % self.world == self.rank:
                yield key


def _as_is(batch: Any) -> Any:
    return batch


def worker_batches(
    task: WorkerTask, *, seed: int, epoch: int, index: int, rank: int = 0, world: int = 1, workers: int = 2, prefetch: int = 2
) -> Iterator[tuple[int, int, Any]]:
    """Every batch position from ``(epoch, index)`` on, with this process's batches built by ``workers`` processes.

    ``(epoch, index)`` must be the start of an optimizer step (where a run starts or resumes), so
    that position ``c`` counted from it belongs to process ``c mod world``.

    Args:
        task: the task (see the module docstring).
        seed: ``train.seed``.
        epoch: the epoch to start in.
        index: the batch of it to start at.
        rank: this process's rank.
        world: the number of processes.
        workers: DataLoader worker processes (>= 1).
        prefetch: batches each worker keeps ready.

    Returns:
        An endless iterator of ``(epoch, next index, batch)``: ``batch`` on the device at this
        process's positions, None at the other processes' (the position still advances).
    """
    count = lambda e: task.batch_count(e, seed)  # noqa: E731
    context = multiprocessing.get_context("fork") if "fork" in multiprocessing.get_all_start_methods() else None
    loader = DataLoader(
        _Batches(task, seed), batch_size=None, sampler=_OwnKeys(count, epoch, index, rank, world), collate_fn=_as_is,
        num_workers=workers, prefetch_factor=prefetch, multiprocessing_context=context,
        generator=torch.Generator().manual_seed(seed),  # the workers' base seed: the main process's RNG stays untouched
    )
    batches = iter(loader)
    try:
        for c, (e, i) in enumerate(positions(count, epoch, index)):
            yield e, i + 1, task.on_device(next(batches)) if c % world == rank else None
    finally:
        del batches  # the loader's iterator shuts its workers down
