"""StructBERT's word structural objective against its definition (Wang et al. 2020, section 2.2)."""

from __future__ import annotations

import torch

from attnkit.objectives.mlm import IGNORE, MaskingConfig, mask_tokens
from attnkit.objectives.structural import shuffle_trigrams


def test_trigrams_are_shuffled_out_of_order_and_labelled_with_the_originals():
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(100, 100 + 8 * 120).reshape(8, 120)  # every token distinct: the shuffle is visible
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False
    labels = torch.full_like(ids, IGNORE)
    labels[:, 10:20] = ids[:, 10:20]  # already chosen for masked LM: never shuffled
    inputs, out = shuffle_trigrams(ids, labels, maskable, share=0.1, generator=g)
    assert torch.equal(out[:, 10:20], ids[:, 10:20]) and torch.equal(inputs[:, 10:20], ids[:, 10:20])
    for b in range(8):
        moved = (out[b] != IGNORE) & (torch.arange(120) >= 20) | (out[b] != IGNORE) & (torch.arange(120) < 10)
        positions = moved.nonzero().squeeze(1).tolist()
        assert len(positions) == 3 * round(0.1 * 119 / 3)
        for s in positions[::3]:
            window = inputs[b, s : s + 3]
            assert sorted(window.tolist()) == ids[b, s : s + 3].tolist() and not torch.equal(window, ids[b, s : s + 3])
            assert torch.equal(out[b, s : s + 3], ids[b, s : s + 3])
        untouched = (out[b] == IGNORE)
        assert torch.equal(inputs[b][untouched], ids[b][untouched])


def test_mask_tokens_adds_the_shuffles_after_masking():
    ids = torch.randint(10, 1000, (4, 60))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    plain = mask_tokens(ids, maskable, mask_id=4, random_ids=torch.arange(10, 1000), generator=torch.Generator().manual_seed(1))
    both = mask_tokens(ids, maskable, mask_id=4, random_ids=torch.arange(10, 1000), config=MaskingConfig(word_structural=0.2),
                       generator=torch.Generator().manual_seed(1))
    chosen = plain[1] != IGNORE
    assert torch.equal(both[1][chosen], plain[1][chosen]) and torch.equal(both[0][chosen], plain[0][chosen])
    assert (both[1] != IGNORE).sum() > chosen.sum()
