"""SpanBERT's span masking (Joshi et al. 2020, section 3.1).

Instead of independent tokens, contiguous spans of whole words are masked: a span length ``l`` (in
words) is drawn from a geometric distribution ``Geo(p = 0.2)`` clipped at ``l_max = 10`` (renormalised
over 1..10, mean 3.8 words), a starting word is drawn uniformly, and the span is chosen if it overlaps
no span chosen before; this repeats until 15% of the row's maskable tokens are chosen, the last span
cut short, word by word, where the budget is reached (the paper's code cuts it token by token). The 80/10/10 replacement is decided per *span*: all its tokens
become [MASK], all become random tokens, or all stay. The targets are the original tokens at every
chosen position, as in BERT's masked LM (:mod:`attnkit.objectives.mlm`). With ``return_spans`` the spans
come back too, for the span boundary objective (:mod:`attnkit.objectives.span_boundary`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.objectives.mlm import IGNORE

GEOMETRIC_P, MAX_SPAN = 0.2, 10


def span_length_pmf(p: float = GEOMETRIC_P, max_span: int = MAX_SPAN) -> Tensor:
    """``P(l)`` for ``l = 1..max_span``: ``p (1 - p)^(l - 1)`` renormalised over the clipped range (float64)."""
    lengths = torch.arange(1, max_span + 1, dtype=torch.float64)
    pmf = p * (1 - p) ** (lengths - 1)
    return pmf / pmf.sum()


def choose_spans(sizes: list[int], budget: int, pmf: Tensor, generator: torch.Generator | None = None) -> list[list[int]]:
    """Spans of a row's words, in the order drawn, until they hold ``budget`` tokens.

    Args:
        sizes: the tokens of each word of the row, in order.
        budget: the tokens to choose.
        pmf: the span-length distribution over ``1..len(pmf)`` words (:func:`span_length_pmf`).
        generator: the random source.

    Returns:
        Each span as its word indices; spans never share a word, and only the last one may be shorter than drawn.
    """
    spans: list[list[int]] = []
    taken: set[int] = set()
    chosen = 0
    for _ in range(10 * len(sizes)):  # enough draws to reach the budget; a rejected overlap costs one
        if chosen >= budget:
            break
        length = int(torch.multinomial(pmf, 1, generator=generator)) + 1
        start = int(torch.randint(len(sizes), (1,), generator=generator))
        span = list(range(start, min(start + length, len(sizes))))
        if any(w in taken for w in span):
            continue
        kept = []
        for w in span:
            if chosen >= budget:
                break
            kept.append(w)
            chosen += sizes[w]
        taken.update(kept)
        spans.append(kept)
    return spans


def span_mask_tokens(
    ids: Tensor,
    maskable: Tensor,
    word_ids: Tensor,
    *,
    mask_id: int,
    random_ids: Tensor,
    select_prob: float = 0.15,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    p: float = GEOMETRIC_P,
    max_span: int = MAX_SPAN,
    generator: torch.Generator | None = None,
    return_spans: bool = False,
) -> tuple[Tensor, ...]:
    """Choose spans of whole words per row until ``select_prob`` of its maskable tokens are chosen, and corrupt them.

    Args:
        ids: ``(B, T)`` token ids.
        maskable: ``(B, T)`` True where a token may be chosen.
        word_ids: ``(B, T)`` the word each token belongs to (increasing along the row).
        mask_id: the [MASK] id.
        random_ids: ``(N,)`` the ids a random replacement draws from.
        select_prob: the share of maskable tokens to choose (15%).
        mask_prob, random_prob: per span, the chance of [MASK] and of random tokens (else kept).
        p: the geometric parameter of the span length in words.
        max_span: the longest span in words.
        generator: for reproducible masks (CPU).
        return_spans: also return ``span_index (B, T)``: each chosen token's span, numbered from 0 along the row in
            the order drawn, -1 elsewhere.

    Returns:
        ``(inputs (B, T), labels (B, T))`` as :func:`attnkit.objectives.mlm.mask_tokens` returns them (and ``span_index``).
    """
    pmf = span_length_pmf(p, max_span)
    inputs, labels = ids.clone(), torch.full_like(ids, IGNORE)
    span_index = torch.full_like(ids, -1)
    rows_ok, rows_word = maskable.bool().cpu(), word_ids.cpu()
    for b in range(ids.shape[0]):
        positions = rows_ok[b].nonzero().squeeze(1).tolist()
        if not positions:
            continue
        words: dict[int, list[int]] = {}
        for t in positions:
            words.setdefault(int(rows_word[b, t]), []).append(t)
        order = list(words.values())  # each word's token positions, in row order
        budget = max(1, round(select_prob * len(positions)))
        for k, span in enumerate(choose_spans([len(w) for w in order], budget, pmf, generator)):
            action = float(torch.rand((), generator=generator))
            for t in (t for w in span for t in order[w]):
                labels[b, t] = ids[b, t]
                span_index[b, t] = k
                if action < mask_prob:
                    inputs[b, t] = mask_id
                elif action < mask_prob + random_prob:
                    inputs[b, t] = random_ids[int(torch.randint(len(random_ids), (1,), generator=generator))]
    return (inputs, labels, span_index) if return_spans else (inputs, labels)
