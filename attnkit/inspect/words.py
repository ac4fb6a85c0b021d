"""Word pieces merged into words for display (Clark et al. 2019, "What Does BERT Look At?", section 2).

Attention *to* a split word is the sum of the attention to its pieces, and attention *from*
a split word is the mean of its pieces' attention rows, so every merged row still sums to one.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def word_groups(tokens: Sequence[str], word_ids: Sequence[int | None] | None = None) -> tuple[list[str], list[int]]:
    """Which word each token belongs to.

    Args:
        tokens: the tokens as strings.
        word_ids: the tokenizer's word index of each token (None for special tokens). Without it,
            the marks of the tokenizer decide: with WordPiece (some token starts with ``##``) a
            ``##`` token continues the word before it; with byte-level BPE or SentencePiece (some
            token starts with ``Ġ`` or ``▁``) a token without that mark continues the word before
            it; otherwise every token is a word. Special tokens (``[CLS]``, ``<s>``) stand alone.

    Returns:
        ``(words, group)``: the merged words as strings, and for each token the index of its word.
    """
    wordpiece = any(t.startswith("##") for t in tokens)
    bpe = not wordpiece and any(t.startswith(("Ġ", "▁")) for t in tokens)
    words: list[str] = []
    group: list[int] = []
    prev_special = True
    for n, tok in enumerate(tokens):
        special = len(tok) > 2 and ((tok[0] == "[" and tok[-1] == "]") or (tok[0] == "<" and tok[-1] == ">"))
        if word_ids is not None:
            new = word_ids[n] is None or n == 0 or word_ids[n] != word_ids[n - 1] or prev_special
            prev_special = word_ids[n] is None
        else:
            if wordpiece:
                cont = tok.startswith("##")
            elif bpe:
                cont = not tok.startswith(("Ġ", "▁"))
            else:
                cont = False
            new = special or prev_special or not cont
            prev_special = special
        piece = tok[2:] if wordpiece and tok.startswith("##") and not new else tok
        if new:
            words.append(piece)
        else:
            words[-1] += piece
        group.append(len(words) - 1)
    return words, group


def merge(weights: Tensor, q_group: Sequence[int], k_group: Sequence[int] | None = None) -> Tensor:
    """Merge the query and key axes of ``(..., Tq, Tk)`` weights into words.

    Args:
        weights: attention weights, tokens on the last two axes.
        q_group: word index of each query token.
        k_group: word index of each key token (default ``q_group``, for self-attention).

    Returns:
        ``(..., Wq, Wk)``: rows averaged over a word's pieces, columns summed.
    """
    k_group = q_group if k_group is None else k_group
    qg = torch.as_tensor(list(q_group), device=weights.device)
    kg = torch.as_tensor(list(k_group), device=weights.device)
    to_k = torch.nn.functional.one_hot(kg, int(kg.max()) + 1).to(weights.dtype)  # (Tk, Wk)
    from_q = torch.nn.functional.one_hot(qg, int(qg.max()) + 1).to(weights.dtype).T  # (Wq, Tq)
    from_q = from_q / from_q.sum(-1, keepdim=True)
    return from_q @ weights @ to_k
