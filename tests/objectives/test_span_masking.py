"""SpanBERT's span masking against its definition (Joshi et al. 2020, section 3.1): lengths, budget, whole words, per-span replacement."""

from __future__ import annotations

from collections import Counter

import torch

from attnkit.objectives.mlm import IGNORE, MaskingConfig, mask_tokens
from attnkit.objectives.span_masking import choose_spans, span_length_pmf, span_mask_tokens

MASK = 4


def rows(B: int = 64, T: int = 120, piece_every: int = 3):
    """Rows of ordinary tokens; every third token continues the previous word (a ``##`` piece)."""
    ids = torch.randint(10, 1000, (B, T))
    maskable = torch.ones(B, T, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS], [SEP]
    starts = torch.ones(B, T, dtype=torch.long)
    starts[:, 2::piece_every] = 0
    return ids, maskable, torch.cumsum(starts, 1) - 1


def test_pmf_is_the_clipped_geometric():
    pmf = span_length_pmf()
    assert len(pmf) == 10 and abs(float(pmf.sum()) - 1) < 1e-12
    assert abs(float((pmf * torch.arange(1, 11)).sum()) - 3.8) < 0.05  # the paper: mean 3.8 words
    torch.testing.assert_close(pmf[1] / pmf[0], torch.tensor(0.8, dtype=torch.float64))


def test_budget_whole_words_and_per_span_replacement():
    g = torch.Generator().manual_seed(0)
    ids, maskable, words = rows()
    inputs, labels = span_mask_tokens(ids, maskable, words, mask_id=MASK, random_ids=torch.arange(10, 1000), generator=g)
    chosen = labels != IGNORE
    assert not chosen[~maskable].any() and torch.equal(labels[chosen], ids[chosen])
    share = chosen.sum(1).float() / maskable.sum(1)
    assert (share >= 0.15 - 1 / 118).all() and (share < 0.15 + 3 / 118).all() and abs(float(share.mean()) - 0.15) < 0.01
    for b in range(ids.shape[0]):  # whole words only
        for w in set(words[b][chosen[b]].tolist()):
            assert chosen[b][(words[b] == w) & maskable[b]].all()
    masked, kept = (inputs == MASK) & chosen, (inputs == ids) & chosen
    assert 0.7 < float(masked.sum() / chosen.sum()) < 0.9 and 0.03 < float(kept.sum() / chosen.sum()) < 0.2


def test_span_lengths_follow_the_clipped_geometric():
    """Every span but the last (cut at the budget) has a length drawn from the clipped geometric; spans never share a word."""
    g = torch.Generator().manual_seed(1)
    counts: Counter[int] = Counter()
    pmf = span_length_pmf()
    for _ in range(300):
        chosen = choose_spans([1] * 2000, 80, pmf, g)
        words = [w for span in chosen for w in span]
        assert len(words) == len(set(words)) == 80 and all(span == list(range(span[0], span[-1] + 1)) for span in chosen)
        counts.update(len(span) for span in chosen[:-1])
    total = sum(counts.values())
    tv = 0.5 * sum(abs(counts.get(l, 0) / total - (float(pmf[l - 1]) if l <= 10 else 0.0)) for l in range(1, 21))
    assert tv < 0.03


def test_mask_tokens_dispatches_to_span_masking():
    ids, maskable, words = rows(B=4)
    cfg = MaskingConfig(span=True)
    a = mask_tokens(ids, maskable, mask_id=MASK, random_ids=torch.arange(10, 1000), config=cfg, word_ids=words,
                    generator=torch.Generator().manual_seed(2))
    b = span_mask_tokens(ids, maskable, words, mask_id=MASK, random_ids=torch.arange(10, 1000), generator=torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
