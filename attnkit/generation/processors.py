"""Logit adjustments against repetition, applied before the next token is chosen.

* Repetition penalty (Keskar et al. 2019, CTRL, section 4.1): the logit of every token already in
  the sequence (prompt and generated) is divided by ``penalty`` where positive and multiplied by
  it where negative, so a penalty above 1 makes each seen token less likely.
* No-repeat n-gram blocking (Paulus et al. 2018, section 2.5): a token that would complete an
  n-gram already present in the sequence gets probability zero (logit ``-inf``).
"""

from __future__ import annotations

import torch
from torch import Tensor


def repetition_penalty(logits: Tensor, sequences: list[list[int]], penalty: float) -> Tensor:
    """``logits: (B, V)`` with each row's seen tokens penalised; ``sequences[b]`` is row b's tokens so far.

    Args:
        logits: next-token logits of each row.
        sequences: each row's tokens so far (prompt and generated).
        penalty: ``> 1`` discourages repeats, 1 leaves the logits as they are.

    Returns:
        A new ``(B, V)`` tensor.
    """
    if penalty == 1.0:
        return logits
    out = logits.clone()
    for b, seq in enumerate(sequences):
        if not seq:
            continue
        ids = torch.tensor(sorted(set(seq)), device=logits.device)  # each seen token once
        score = out[b, ids]
        out[b, ids] = torch.where(score < 0, score * penalty, score / penalty)
    return out


def banned_ngram_tokens(sequence: list[int], n: int) -> set[int]:
    """The tokens that would complete an n-gram already in ``sequence`` (its last ``n - 1`` tokens as prefix)."""
    if n < 1 or len(sequence) + 1 < n:
        return set()
    if n == 1:
        return set(sequence)
    prefix = tuple(sequence[len(sequence) - n + 1 :])
    return {sequence[i + n - 1] for i in range(len(sequence) - n + 1) if tuple(sequence[i : i + n - 1]) == prefix}


def no_repeat_ngram(logits: Tensor, sequences: list[list[int]], n: int) -> Tensor:
    """``logits: (B, V)`` with the tokens of :func:`banned_ngram_tokens` set to ``-inf`` in each row (n = 0: unchanged)."""
    if n <= 0:
        return logits
    out = logits.clone()
    for b, seq in enumerate(sequences):
        banned = banned_ngram_tokens(seq, n)
        if banned:
            out[b, torch.tensor(sorted(banned), device=logits.device)] = float("-inf")
    return out
