"""Padding and batching shared by every task: one pad function and two batch samplers.

* :func:`pad` lays variable-length rows of token ids into one ``(B, T)`` tensor, ``T`` the
  longest row (or that rounded up to a multiple, so that few distinct shapes occur), padding
  on the right or the left, and optionally returns the mask of real tokens.
* :func:`bucketed_batches` groups examples of similar length into batches of a fixed number of
  rows: the (shuffled) examples are cut into chunks of ``bucket_size`` batches, each chunk is
  sorted by length and cut into batches, and the batches are shuffled. Padding then costs
  little while every batch still mixes examples from the whole set.
* :func:`token_budget_batches` groups examples by length into batches of about ``max_tokens``
  padded tokens, Vaswani et al. 2017, section 5.1: "sentence pairs were batched together by
  approximate sequence length".

The samplers draw every random number from the generator they are given, a
:class:`random.Random` or a :class:`torch.Generator` seeded from ``(seed, epoch)`` by the
task, so the batches of an epoch are a function of ``(seed, epoch)`` alone and a resumed run
sees the batches an uninterrupted one would.
"""

from __future__ import annotations

import random
from typing import Literal, Sequence, overload

import torch
from torch import Tensor

Rng = random.Random | torch.Generator


def permutation(n: int, rng: Rng) -> list[int]:
    """A random permutation of ``range(n)`` drawn from ``rng``.

    A :class:`random.Random` shuffles ``list(range(n))`` (so ``[xs[i] for i in permutation(n, r)]``
    equals ``r.shuffle(xs)`` from the same state); a :class:`torch.Generator` draws
    ``torch.randperm(n)``.
    """
    if isinstance(rng, torch.Generator):
        return torch.randperm(n, generator=rng).tolist()
    order = list(range(n))
    rng.shuffle(order)
    return order


@overload
def pad(seqs: Sequence[Sequence[int] | Tensor], pad_id: int = ..., *, multiple: int = ..., side: Literal["right", "left"] = ...,
        return_mask: Literal[False] = ...) -> Tensor: ...
@overload
def pad(seqs: Sequence[Sequence[int] | Tensor], pad_id: int = ..., *, multiple: int = ..., side: Literal["right", "left"] = ...,
        return_mask: Literal[True]) -> tuple[Tensor, Tensor]: ...
def pad(
    seqs: Sequence[Sequence[int] | Tensor],
    pad_id: int = 0,
    *,
    multiple: int = 1,
    side: Literal["right", "left"] = "right",
    return_mask: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Pad rows of ids to one ``(B, T)`` long tensor.

    Args:
        seqs: the rows, lists of ints or 1-D integer tensors.
        pad_id: the value of padded positions.
        multiple: ``T`` is the longest row rounded up to a multiple of this.
        side: ``"right"``: each row starts at position 0 (encoders, teacher forcing);
            ``"left"``: each row ends at position ``T - 1`` (batched decoding of prompts).
        return_mask: also return the ``(B, T)`` bool mask, True at real tokens.

    Returns:
        The padded ids, and the mask when ``return_mask``.
    """
    if multiple < 1:
        raise ValueError(f"multiple={multiple} must be >= 1")
    lengths = [len(s) for s in seqs]
    t = -(-max(lengths, default=0) // multiple) * multiple
    if all(not isinstance(s, Tensor) for s in seqs):  # Python lists: pad as lists, build the tensor in one call
        if side == "right":
            rows = [[*s, *[pad_id] * (t - n)] for s, n in zip(seqs, lengths)]
        else:
            rows = [[*[pad_id] * (t - n), *s] for s, n in zip(seqs, lengths)]
        ids = torch.tensor(rows, dtype=torch.long).reshape(len(seqs), t)  # (B, T)
    else:
        ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)  # (B, T)
        for r, (s, n) in enumerate(zip(seqs, lengths)):
            if n:
                row = torch.as_tensor(s, dtype=torch.long)
                if side == "right":
                    ids[r, :n] = row
                else:
                    ids[r, t - n :] = row
    if not return_mask:
        return ids
    pos = torch.arange(t)[None, :]  # (1, T)
    n = torch.tensor(lengths, dtype=torch.long)[:, None]  # (B, 1)
    mask = pos < n if side == "right" else pos >= t - n  # (B, T)
    return ids, mask


def epoch_rng(seed: int, epoch: int) -> random.Random:
    """The generator of one epoch's data order: a function of ``(seed, epoch)`` only."""
    return random.Random(seed * 1_000_003 + epoch)


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, *, bucket_size: int = 50, seed: int = 0, epoch: int = 0, shuffle: bool = True,
    rng: Rng | None = None,
) -> list[list[int]]:
    """Index batches of ``batch_size`` examples of similar length.

    Shuffle all indices, cut them into chunks of ``batch_size * bucket_size``, sort each chunk by
    length (stable), cut it into batches, and shuffle the batches. Without ``shuffle`` the same
    in input order and without either shuffle (a fixed layout for evaluation). Every index
    appears exactly once.

    Args:
        lengths: the length of each example.
        batch_size: rows per batch (the last batch of a chunk may have fewer).
        bucket_size: how many batches' worth of examples are sorted together.
        seed, epoch: fix the shuffles (through :func:`epoch_rng`).
        shuffle: False for the fixed layout.
        rng: draw the shuffles from this generator instead of ``epoch_rng(seed, epoch)``.

    Returns:
        The batches, each a list of example indices.
    """
    if batch_size < 1 or bucket_size < 1:
        raise ValueError(f"batch_size={batch_size} and bucket_size={bucket_size} must be >= 1")
    if shuffle and rng is None:
        rng = epoch_rng(seed, epoch)
    order = permutation(len(lengths), rng) if shuffle and rng is not None else list(range(len(lengths)))
    chunk = batch_size * bucket_size
    batches: list[list[int]] = []
    for s in range(0, len(order), chunk):
        part = sorted(order[s : s + chunk], key=lambda i: lengths[i])
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    if shuffle and rng is not None:
        batches = [batches[j] for j in permutation(len(batches), rng)]
    return batches


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches: every example sorted by length (longest first), cut into batches."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[j : j + batch_size] for j in range(0, len(order), batch_size)]


def token_budget_batches(lengths: Sequence[int] | Tensor, max_tokens: int, *, rng: Rng | None = None) -> list[list[int]]:
    """Index batches of examples of similar length holding at most ``max_tokens`` padded tokens.

    Examples are taken in order of length (with ``rng``: random among equal lengths) and a batch
    is closed when one more example would make ``rows * longest`` exceed ``max_tokens``; with
    ``rng`` the batches are then shuffled. An example longer than the budget on its own forms a
    batch by itself. For pairs, pass each pair's longer side: the budget then holds on both.

    Args:
        lengths: the (padded) length of each example.
        max_tokens: the most padded tokens per batch.
        rng: the epoch's generator, or None for the fixed layout (stable order by length).

    Returns:
        The batches, each a list of example indices.
    """
    length = torch.as_tensor(lengths, dtype=torch.long)  # (N,)
    if rng is not None:
        tiebreak = torch.tensor(permutation(len(length), rng), dtype=torch.long)  # (N,)
        # sorted by length, random among equal lengths: a stable sort of a random permutation
        order = tiebreak[torch.sort(length[tiebreak], stable=True).indices].tolist()
    else:
        order = torch.sort(length, stable=True).indices.tolist()
    size = length.tolist()
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        t = max(longest, size[i])
        if current and (len(current) + 1) * t > max_tokens:
            batches.append(current)
            current, t = [], size[i]
        current.append(i)
        longest = t
    if current:
        batches.append(current)
    if rng is not None:
        batches = [batches[j] for j in permutation(len(batches), rng)]
    return batches
