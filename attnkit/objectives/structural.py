"""StructBERT's word structural objective (Wang et al. 2020, section 2.2, eq. 1).

After BERT's masking, some trigrams of tokens that were *not* chosen for masked LM are shuffled in
place, and the masked-LM head must restore each position's original token, i.e. the right order of
the trigram: ``max sum log P(pos_1 = t_1, pos_2 = t_2, pos_3 = t_3 | t_1 ... t_K)``. The paper shuffles
5% of the trigrams; here ``round(share * n / 3)`` non-overlapping trigrams of a row's ``n`` maskable
tokens (5% of the row's trigrams), each permuted by one of the five orders other than its own (a
trigram left in order would be a free label). The sentence structural objective (next, previous or
random sentence) is not implemented.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

from attnkit.objectives.mlm import IGNORE

ORDERS = [p for p in itertools.permutations(range(3)) if p != (0, 1, 2)]


def shuffle_trigrams(inputs: Tensor, labels: Tensor, maskable: Tensor, *, share: float = 0.05,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Shuffle trigrams of unchosen maskable tokens and label their positions with the original tokens.

    Args:
        inputs: ``(B, T)`` the masked-LM inputs.
        labels: ``(B, T)`` masked-LM labels (``IGNORE`` where a token was not chosen).
        maskable: ``(B, T)`` True for ordinary tokens.
        share: the fraction of a row's trigrams to shuffle.
        generator: the random source.

    Returns:
        ``(inputs, labels)`` with the shuffled trigrams and their labels added.
    """
    inputs, labels = inputs.clone(), labels.clone()
    free = (maskable.bool() & (labels == IGNORE)).cpu()
    for b in range(inputs.shape[0]):
        want = round(share * int(maskable[b].sum()) / 3)
        starts = [s for s in range(inputs.shape[1] - 2) if bool(free[b, s : s + 3].all())]
        taken: set[int] = set()
        for s in (starts[i] for i in torch.randperm(len(starts), generator=generator).tolist()):
            if want == 0:
                break
            if taken & {s, s + 1, s + 2}:
                continue
            taken.update((s, s + 1, s + 2))
            order = ORDERS[int(torch.randint(len(ORDERS), (1,), generator=generator))]
            original = inputs[b, s : s + 3].clone()
            labels[b, s : s + 3] = original
            inputs[b, s : s + 3] = original[list(order)]
            want -= 1
    return inputs, labels
