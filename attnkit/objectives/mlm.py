"""Masked language modelling inputs and loss (Devlin et al. 2019, section 3.1, task #1, and appendix A.1).

Of the tokens that may be predicted (never [CLS], [SEP], [PAD] or other specials), each is
chosen with probability ``select_prob`` (15%); a chosen token is replaced by [MASK] with
probability ``mask_prob`` (80%), by a random token with probability ``random_prob`` (10%),
and kept unchanged otherwise (10%). The model predicts the original token at every chosen
position; other positions carry ``IGNORE`` and do not count.

Masking is dynamic: drawn anew for each batch (RoBERTa, Liu et al. 2019, section 4.1), with a
Bernoulli choice per token rather than a fixed count per sequence. Whole-word masking chooses
words instead (every piece of a chosen word is predicted; the 80/10/10 decision is then
taken per piece, as in the released BERT code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from attnkit.config import Config, check
from attnkit.objectives.causal_lm import causal_lm_loss

IGNORE = -100


@dataclass(frozen=True, kw_only=True)
class MaskingConfig(Config):
    """The masking proportions (defaults: BERT's 15% chosen, then 80% [MASK] / 10% random / 10% kept)."""

    select_prob: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1
    whole_word: bool = False
    span: bool = False  # SpanBERT's span masking (attnkit.objectives.span_masking)
    span_boundary: bool = False  # SpanBERT's span boundary objective on those spans (attnkit.objectives.span_boundary)
    word_structural: float = 0.0  # StructBERT: share of trigrams shuffled and restored (attnkit.objectives.structural)

    def validate(self) -> None:
        check(0.0 < self.select_prob < 1.0, "select_prob", self.select_prob, "must be in (0, 1)")
        for name in ("mask_prob", "random_prob"):
            check(0.0 <= getattr(self, name) <= 1.0, name, getattr(self, name), "must be in [0, 1]")
        check(self.mask_prob + self.random_prob <= 1.0, "random_prob", self.random_prob,
              f"mask_prob + random_prob must be at most 1 (mask_prob={self.mask_prob})")
        check(not (self.span and self.whole_word), "span", self.span, "masks spans of whole words already; leave whole_word off")
        check(self.span or not self.span_boundary, "span_boundary", self.span_boundary,
              "predicts the tokens of SpanBERT's spans; it needs span masking (span=true, --span-masking)")
        check(0.0 <= self.word_structural < 1.0, "word_structural", self.word_structural, "must be in [0, 1) (StructBERT: 0.05)")


def mask_tokens(
    ids: Tensor,
    maskable: Tensor,
    *,
    mask_id: int,
    random_ids: Tensor,
    config: MaskingConfig = MaskingConfig(),
    word_ids: Tensor | None = None,
    generator: torch.Generator | None = None,
    return_spans: bool = False,
) -> tuple[Tensor, ...]:
    """Choose and corrupt tokens for masked-LM training.

    Args:
        ids: ``(B, T)`` token ids.
        maskable: ``(B, T)`` bool, True where a token may be chosen (real, non-special tokens).
        mask_id: the [MASK] id.
        random_ids: ``(N,)`` the ids a random replacement is drawn from (uniformly); usually
            every non-special token of the vocabulary.
        config: the proportions and whole-word masking.
        word_ids: ``(B, T)`` index of the word each token belongs to (any value where not
            maskable); needed for whole-word masking.
        generator: for reproducible masks.
        return_spans: with span masking, also return each chosen token's span (``span_index``, -1 elsewhere;
            :func:`~attnkit.objectives.span_masking.span_mask_tokens`).

    Returns:
        ``(inputs (B, T), labels (B, T))``: the corrupted ids, and the original id at every
        chosen position with :data:`IGNORE` elsewhere; with ``return_spans``, ``span_index (B, T)`` after them.
    """
    if ids.shape != maskable.shape:
        raise ValueError(f"ids {tuple(ids.shape)} and maskable {tuple(maskable.shape)} must have the same shape")
    if return_spans and not config.span:
        raise ValueError("return_spans needs span masking (config.span)")
    maskable = maskable.bool()
    if config.span:
        from attnkit.objectives.span_masking import span_mask_tokens

        if word_ids is None:
            raise ValueError("span masking needs word_ids")
        spans = span_mask_tokens(ids, maskable, word_ids, mask_id=mask_id, random_ids=random_ids, select_prob=config.select_prob,
                                 mask_prob=config.mask_prob, random_prob=config.random_prob, generator=generator, return_spans=True)
        masked = _word_structural(spans[0], spans[1], maskable, config, generator)
        return (*masked, spans[2]) if return_spans else masked

    def uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=ids.device)

    if config.whole_word:
        if word_ids is None:
            raise ValueError("whole-word masking needs word_ids")
        w = torch.where(maskable, word_ids, torch.zeros_like(word_ids)).long()  # (B, T)
        chosen_word = uniform(ids.shape[0], int(w.max()) + 1 if w.numel() else 1) < config.select_prob  # (B, W)
        selected = chosen_word.gather(1, w) & maskable  # (B, T): every piece of a chosen word
    else:
        selected = (uniform(*ids.shape) < config.select_prob) & maskable  # (B, T)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE))
    action = uniform(*ids.shape)  # one draw decides [MASK] / random / keep
    to_mask = selected & (action < config.mask_prob)
    to_random = selected & (action >= config.mask_prob) & (action < config.mask_prob + config.random_prob)
    pick = torch.randint(len(random_ids), ids.shape, generator=generator, device=ids.device)
    inputs = torch.where(to_mask, torch.full_like(ids, mask_id), ids)
    inputs = torch.where(to_random, random_ids.to(ids.device)[pick], inputs)
    return _word_structural(inputs, labels, maskable, config, generator)


def _word_structural(inputs: Tensor, labels: Tensor, maskable: Tensor, config: MaskingConfig,
                     generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """StructBERT's shuffled trigrams on top of the masking, when ``config.word_structural`` asks for them."""
    if config.word_structural <= 0:
        return inputs, labels
    from attnkit.objectives.structural import shuffle_trigrams

    return shuffle_trigrams(inputs, labels, maskable, share=config.word_structural, generator=generator)


def prediction_slots(labels: Tensor, *, expected: float = 0.15, multiple: int = 8) -> tuple[Tensor, Tensor]:
    """The chosen positions of each row gathered into ``P`` slots, so that the output layer runs at them alone.

    BERT's and ELECTRA's released pretraining code gathers the masked positions
    (``max_predictions_per_seq`` of them per row) before the vocabulary projection, instead of
    projecting all ``T`` rows of a sequence when about 15% of them are predicted. Here ``P`` is
    set per batch, never cutting a chosen position: the larger of twice the expected count,
    ``2 * expected * T`` (so that batches of one length almost always share one ``P``, and one CUDA
    graph), and the largest row's count, rounded up to ``multiple`` and at most ``T``.

    Args:
        labels: ``(B, T)`` the original id at chosen positions, :data:`IGNORE` elsewhere.
        expected: the share of positions usually chosen (``MaskingConfig.select_prob``).
        multiple: ``P`` is a multiple of this (or ``T``).

    Returns:
        ``(positions (B, P), targets (B, P))``: each row's chosen positions in order, then 0; the
        original ids there, :data:`IGNORE` in the slots past a row's count.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be (B, T), got shape {tuple(labels.shape)}")
    check(multiple >= 1, "multiple", multiple, "must be at least 1")
    chosen = labels != IGNORE  # (B, T)
    T = labels.shape[1]
    counts = chosen.sum(1)  # (B,)
    most = int(counts.max()) if counts.numel() else 0
    want = max(most, math.ceil(2 * expected * T), 1)
    P = min(T, -(-want // multiple) * multiple)
    order = torch.argsort((~chosen).to(torch.int8), dim=1, stable=True)[:, :P]  # chosen positions first, in order
    valid = torch.arange(P, device=labels.device) < counts[:, None]  # (B, P)
    positions = torch.where(valid, order, torch.zeros_like(order))
    targets = torch.where(valid, labels.gather(1, order), torch.full_like(order, IGNORE))
    return positions, targets


def mlm_loss(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy over the chosen positions: ``logits (B, T, V)``, ``labels (B, T)`` with :data:`IGNORE`.

    Returns:
        ``(mean loss in float32, number of predicted tokens)``.
    """
    return causal_lm_loss(logits, labels, ignore_index=IGNORE)
