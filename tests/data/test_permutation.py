"""XLNet's permutation-LM inputs against their definition (Yang et al. 2019, section 2.2-2.3)."""

from __future__ import annotations

import torch

from attnkit.data.permutation import permutation_inputs
from attnkit.objectives.mlm import IGNORE


def test_visibility_follows_the_order_of_the_targets():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 90, (4, 24))
    mask = torch.ones(4, 24, dtype=torch.long)
    mask[3, 18:] = 0
    perm, mapping, labels = permutation_inputs(ids, mask, k=4, generator=g)
    for b in range(4):
        targets = [int(m.argmax()) for m in mapping[b] if m.any()]
        n = int(mask[b].sum())
        assert len(targets) == round(n / 4) and all(mask[b, t] for t in targets)
        assert labels[b, : len(targets)].tolist() == [int(ids[b, t]) for t in targets]
        assert (labels[b, len(targets):] == IGNORE).all()
        rank = {t: r for r, t in enumerate(targets)}  # the targets in their factorisation order
        for i in range(n):
            for j in range(24):
                hidden = j in rank and (i not in rank or rank[j] >= rank[i])
                assert bool(perm[b, i, j]) == hidden, (b, i, j)


def test_orders_are_random_and_about_one_in_k_is_predicted():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 90, (200, 30))
    _, mapping, labels = permutation_inputs(ids, torch.ones_like(ids), k=6, generator=g)
    assert (labels != IGNORE).sum(1).eq(5).all()
    hits = mapping.sum(1)  # (B, T): how often each position is a target
    share = hits.mean(0)
    assert share.min() > 0.08 and share.max() < 0.26  # every position about 1/6 of the time
    firsts = {int(m[0].argmax()) for m in mapping}
    assert len(firsts) > 20
