"""Denoising inputs for seq2seq pretraining: BART's noising functions (Lewis et al. 2020) and MASS (Song et al. 2019).

BART (section 2.2, figure 2) corrupts a document and the decoder reconstructs the original:

* **text infilling**: span lengths are drawn from Poisson(lambda=3) until 30% of the tokens are
  covered; each span is replaced by a single mask token, so a zero-length span inserts a mask and
  the model must also learn how many tokens are missing (:func:`text_infilling`);
* **sentence permutation**: the sentences are shuffled (:func:`permute_sentences`);
* **token deletion**: random tokens are deleted, without a mask (:func:`delete_tokens`);
* **document rotation**: a token is chosen uniformly and the document rotated to start with it
  (:func:`rotate`).

The paper's final model uses infilling and permutation together (section 5.1). Deviations: the
ratio counts tokens (fairseq's code counts whole words), and spans never overlap: the span lengths
are drawn first, the last one shortened so that exactly ``round(ratio * n)`` tokens are covered,
and the runs of kept tokens between them are a uniformly random split of the rest.

MASS (section 2.2): one contiguous fragment of about half the sentence (``k = m/2``, the paper's
best setting, section 4.1) is replaced by mask tokens in the encoder input, and the decoder
predicts the fragment (:func:`mass_fragment`). Deviations: every masked token becomes the mask
(the paper uses BERT's 80/10/10 within the fragment), and the decoder's positions start at 0 rather
than at the fragment's offset.

Every function draws its random numbers from a :class:`torch.Generator`, so a batch is a function
of the run's seed and epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from attnkit.config import Config, check
from attnkit.data.span_corruption import random_composition


@dataclass(frozen=True, kw_only=True)
class BartNoiseConfig(Config):
    """Which BART noising functions apply, in this order: permutation, deletion, infilling, rotation (section 2.2).

    ``mask_ratio`` of the tokens are infilled in spans of Poisson(``poisson_lambda``) length (0: no
    infilling); ``permute_sentences`` shuffles the sentences; ``delete_ratio`` of the tokens are
    deleted (0: none); ``rotate`` rotates the document. The defaults are the paper's final model (section 5.1).
    """

    mask_ratio: float = 0.3
    poisson_lambda: float = 3.0
    permute_sentences: bool = True
    delete_ratio: float = 0.0
    rotate: bool = False

    def validate(self) -> None:
        check(0.0 <= self.mask_ratio < 1.0, "mask_ratio", self.mask_ratio, "must be in [0, 1)")
        check(self.poisson_lambda > 0, "poisson_lambda", self.poisson_lambda, "must be positive")
        check(0.0 <= self.delete_ratio < 1.0, "delete_ratio", self.delete_ratio, "must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class MassConfig(Config):
    """MASS: the masked fragment is ``fragment_ratio`` of the sequence (the paper's best: half, section 4.1)."""

    fragment_ratio: float = 0.5

    def validate(self) -> None:
        check(0.0 < self.fragment_ratio <= 1.0, "fragment_ratio", self.fragment_ratio, "must be in (0, 1]")


def infilling_spans(n: int, ratio: float = 0.3, poisson_lambda: float = 3.0, *, generator: torch.Generator | None = None) -> list[int]:
    """The span lengths of text infilling: Poisson draws until ``round(ratio * n)`` tokens are covered, the last one cut to fit.

    Args:
        n: tokens in the document.
        ratio: the fraction of tokens to mask.
        poisson_lambda: the mean span length.
        generator: the random source.

    Returns:
        The span lengths in order (zero-length spans included); they sum to ``round(ratio * n)``.
    """
    target = round(ratio * n)
    spans: list[int] = []
    covered = 0
    rate = torch.full((16,), float(poisson_lambda))
    while covered < target:
        for length in torch.poisson(rate, generator=generator).long().tolist():
            spans.append(min(length, target - covered))
            covered += spans[-1]
            if covered == target:
                break
    return spans


def text_infilling(
    ids: Sequence[int], mask_id: int, ratio: float = 0.3, poisson_lambda: float = 3.0, *, generator: torch.Generator | None = None
) -> list[int]:
    """BART's text infilling: spans of Poisson length covering ``ratio`` of the tokens, each replaced by one ``mask_id``.

    Args:
        ids: the document's tokens.
        mask_id: the mask token.
        ratio: the fraction of tokens masked.
        poisson_lambda: the mean span length.
        generator: the random source.

    Returns:
        The corrupted tokens: ``len(ids) - round(ratio * n) + number of spans`` of them.
    """
    spans = infilling_spans(len(ids), ratio, poisson_lambda, generator=generator)
    if not spans:
        return list(ids)
    order = torch.randperm(len(spans), generator=generator).tolist()  # the cut-short span need not be the last
    spans = [spans[i] for i in order]
    kept = random_composition(len(ids) - sum(spans), len(spans) + 1, generator, minimum=0)
    out: list[int] = list(ids[: kept[0]])
    i = kept[0]
    for span, run in zip(spans, kept[1:]):
        out.append(mask_id)
        i += span
        out.extend(ids[i : i + run])
        i += run
    return out


def permute_sentences(sentences: Sequence[Sequence[int]], *, generator: torch.Generator | None = None) -> tuple[list[int], list[int]]:
    """BART's sentence permutation: the sentences in a random order, joined.

    Args:
        sentences: the document's sentences, each a list of token ids.
        generator: the random source.

    Returns:
        ``(tokens, order)``: the permuted document and the permutation (``order[j]`` is the sentence placed j-th).
    """
    order = torch.randperm(len(sentences), generator=generator).tolist()
    return [t for j in order for t in sentences[j]], order


def delete_tokens(ids: Sequence[int], ratio: float, *, generator: torch.Generator | None = None) -> list[int]:
    """BART's token deletion: ``round(ratio * n)`` tokens chosen uniformly are removed, the rest keep their order."""
    drop = set(torch.randperm(len(ids), generator=generator)[: round(ratio * len(ids))].tolist())
    return [t for i, t in enumerate(ids) if i not in drop]


def rotate(ids: Sequence[int], *, generator: torch.Generator | None = None) -> tuple[list[int], int]:
    """BART's document rotation: a token chosen uniformly becomes the first.

    Returns:
        ``(rotated tokens, start)``: ``ids[start:] + ids[:start]``.
    """
    if not ids:
        return [], 0
    start = int(torch.randint(len(ids), (1,), generator=generator))
    return list(ids[start:]) + list(ids[:start]), start


def bart_noise(sentences: Sequence[Sequence[int]], mask_id: int, cfg: BartNoiseConfig, *, generator: torch.Generator | None = None) -> list[int]:
    """The noised document of ``sentences`` under ``cfg``: permutation, deletion, infilling, rotation, those that are on.

    Args:
        sentences: the document's sentences (token ids).
        mask_id: the mask token of infilling.
        cfg: which functions apply.
        generator: the random source.

    Returns:
        The encoder's input; the decoder's target is the original document.
    """
    if cfg.permute_sentences:
        ids, _ = permute_sentences(sentences, generator=generator)
    else:
        ids = [t for s in sentences for t in s]
    if cfg.delete_ratio > 0:
        ids = delete_tokens(ids, cfg.delete_ratio, generator=generator)
    if cfg.mask_ratio > 0:
        ids = text_infilling(ids, mask_id, cfg.mask_ratio, cfg.poisson_lambda, generator=generator)
    if cfg.rotate:
        ids, _ = rotate(ids, generator=generator)
    return ids


def mass_fragment(
    ids: Sequence[int], mask_id: int, fragment_ratio: float = 0.5, *, generator: torch.Generator | None = None
) -> tuple[list[int], list[int], int]:
    """MASS: one contiguous fragment of ``max(1, round(ratio * m))`` tokens, at a uniformly random start, is masked.

    Args:
        ids: the sentence (at least one token).
        mask_id: replaces each token of the fragment in the encoder input.
        fragment_ratio: the fragment's share of the sentence.
        generator: the random source.

    Returns:
        ``(encoder input, fragment, start)``: the input has the sentence's length, and
        ``input[start:start + k]`` is all ``mask_id`` where ``ids[start:start + k]`` is the fragment.
    """
    if not ids:
        raise ValueError("MASS needs a sentence of at least one token")
    k = min(max(1, round(fragment_ratio * len(ids))), len(ids))
    start = int(torch.randint(len(ids) - k + 1, (1,), generator=generator))
    src = list(ids[:start]) + [mask_id] * k + list(ids[start + k :])
    return src, list(ids[start : start + k]), start
