"""Denoising pretraining of the encoder-decoder Transformer: T5 span corruption, BART, MASS.

The text is tokenized once into documents of sentences; the training examples are fixed cuts of
it, and the noise is drawn anew for every epoch from a generator seeded by ``(seed, epoch)``, so a
resumed run sees the batches an uninterrupted one would. The held-out examples are noised once
with a fixed seed. The loss is the teacher-forced seq2seq cross-entropy
(:func:`attnkit.objectives.seq2seq_loss`) of the decoder's target:

* ``t5`` (:mod:`attnkit.data.span_corruption`): the token stream of the documents, concatenated,
  is cut into runs of the raw length that gives ``max_src_len`` input tokens; the target is the
  sentinels and their spans;
* ``bart`` (:mod:`attnkit.data.noising`): runs of whole sentences of one document, noised; the
  target is the original run;
* ``mass``: the same runs with one fragment masked; the target is the fragment.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Literal, Sequence

import torch

from attnkit.data.seq2seq import PairDataset, Seq2SeqBatch, collate
from attnkit.training.tasks import Seq2SeqTask

Objective = Literal["t5", "bart", "mass"]
Example = list[list[int]]  # a run of sentences, each a list of token ids
Noise = Callable[[Example, torch.Generator], tuple[list[int], list[int]]]


def sentence_runs(docs: Sequence[Sequence[Sequence[int]]], budget: int) -> list[Example]:
    """Consecutive sentences of each document grouped into runs of at most ``budget`` tokens.

    A sentence longer than ``budget`` is cut into pieces of ``budget`` tokens; empty sentences are dropped.

    Args:
        docs: documents, each a list of tokenized sentences.
        budget: the most tokens in a run.

    Returns:
        The runs, in document order.
    """
    runs: list[Example] = []
    for doc in docs:
        run: Example = []
        size = 0
        for sentence in doc:
            for piece in (sentence[i : i + budget] for i in range(0, len(sentence), budget)):
                if size + len(piece) > budget and run:
                    runs.append(run)
                    run, size = [], 0
                run.append(list(piece))
                size += len(piece)
        if run:
            runs.append(run)
    return runs


def stream_runs(docs: Sequence[Sequence[Sequence[int]]], length: int) -> list[Example]:
    """T5's packing: every token of every document in one stream, cut into runs of ``length`` (the last may be shorter)."""
    stream = [t for doc in docs for sentence in doc for t in sentence]
    return [[stream[i : i + length]] for i in range(0, len(stream), length)]


def noise_function(objective: Objective, data: Any, *, mask_id: int, sentinel_ids: Sequence[int], eos_id: int, max_len: int) -> Noise:
    """``(example, generator) -> (encoder input, decoder target)`` for ``objective`` under the data config's settings.

    Args:
        objective: ``t5``, ``bart`` or ``mass``.
        data: a :class:`~attnkit.runs.denoising.DenoisingDataConfig` (its ``t5``, ``bart``, ``mass`` settings).
        mask_id: BART's and MASS's mask token.
        sentinel_ids: T5's sentinels in order.
        eos_id: T5's inputs end with it (the decoder's EOS is added by :func:`~attnkit.data.seq2seq.collate`).
        max_len: encoder inputs are cut to this many tokens (infilling's zero-length spans can lengthen a run).
    """
    from attnkit.data.noising import bart_noise, mass_fragment
    from attnkit.data.span_corruption import random_spans_noise_mask, span_corrupt

    def t5(example: Example, g: torch.Generator) -> tuple[list[int], list[int]]:
        ids = example[0]
        mask = random_spans_noise_mask(len(ids), data.t5.noise_density, data.t5.mean_noise_span_length, generator=g)
        inputs, targets = span_corrupt(ids, mask, sentinel_ids, eos_id)
        return inputs, targets[:-1]  # collate appends the decoder's EOS

    def bart(example: Example, g: torch.Generator) -> tuple[list[int], list[int]]:
        return bart_noise(example, mask_id, data.bart, generator=g)[:max_len], [t for s in example for t in s]

    def mass(example: Example, g: torch.Generator) -> tuple[list[int], list[int]]:
        src, fragment, _ = mass_fragment([t for s in example for t in s], mask_id, data.mass.fragment_ratio, generator=g)
        return src, fragment

    return {"t5": t5, "bart": bart, "mass": mass}[objective]


class DenoisingTask(Seq2SeqTask):
    """Teacher-forced seq2seq training on examples noised anew every epoch (no label smoothing unless asked).

    Args:
        train: the training examples.
        valid: the held-out examples (noised once, with seed 0).
        noise: the objective's noise function (:func:`noise_function`).
        batch_size: examples per batch.
        label_smoothing: of the training loss.
        device: where batches go.
    """

    def __init__(self, train: list[Example], valid: list[Example], noise: Noise, *, batch_size: int, label_smoothing: float = 0.0,
                 device: torch.device | str = "cpu") -> None:
        g = torch.Generator().manual_seed(0)
        super().__init__(train, batch_size=batch_size, label_smoothing=label_smoothing,
                         valid=PairDataset([noise(e, g) for e in valid], name="held-out text"), device=device)
        self.noise = noise

    def train_batches(self, epoch: int, seed: int) -> Iterator[Seq2SeqBatch]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train), generator=g).tolist()
        for i in range(0, len(order), self.batch_size):
            yield collate([self.noise(self.train[j], g) for j in order[i : i + self.batch_size]])
