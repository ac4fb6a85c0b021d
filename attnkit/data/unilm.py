"""UniLM's self-attention masks (Dong et al. 2019, section 2.1-2.2, figure 1).

One shared Transformer encoder serves several language models through the mask ``M`` added to
its attention scores, ``A = softmax(QK^T / sqrt(d_k) + M) V`` (eq. 2), here as a boolean mask
(True = may attend), chosen per batch:

* ``bidirectional``: every token sees every real token (BERT's padding mask);
* ``left_to_right``: token i sees the real tokens j <= i (GPT's causal mask);
* ``right_to_left``: token i sees the real tokens j >= i;
* ``seq2seq``: source tokens (segment 0) see the whole source; target tokens (segment 1) see
  the whole source and the target up to themselves.

Padding keys are never seen; a padding *query* row sees every real token (its output is ignored,
and a row with nothing to attend to would make the softmax undefined). UniLM's mixture (section
2.3): a third of the batches bidirectional, a third seq2seq, a sixth each left-to-right and
right-to-left (:data:`UNILM_MIXTURE`).

For a sequence of one segment the seq2seq batches take their source and target from the text
itself: :func:`split_segments` starts the target at a random token of each row.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor

MaskKind = Literal["bidirectional", "left_to_right", "right_to_left", "seq2seq"]
KINDS: tuple[MaskKind, ...] = ("bidirectional", "left_to_right", "right_to_left", "seq2seq")
UNILM_MIXTURE: dict[MaskKind, float] = {"bidirectional": 1 / 3, "seq2seq": 1 / 3, "left_to_right": 1 / 6, "right_to_left": 1 / 6}


def unilm_mask(kind: MaskKind, attention_mask: Tensor, segment_ids: Tensor | None = None) -> Tensor:
    """The ``(B, T, T)`` boolean self-attention mask of ``kind`` (True = query i may attend to key j).

    Args:
        kind: ``bidirectional``, ``left_to_right``, ``right_to_left`` or ``seq2seq``.
        attention_mask: ``(B, T)`` 1 for real tokens.
        segment_ids: ``(B, T)`` 0 for the source, 1 for the target (needed for ``seq2seq``).

    Returns:
        ``(B, T, T)`` bool.
    """
    real = attention_mask.bool()  # (B, T)
    B, T = real.shape
    keys = real[:, None, :].expand(B, T, T)  # (B, T, T): real keys
    i = torch.arange(T, device=real.device)
    if kind == "bidirectional":
        seen = keys
    elif kind == "left_to_right":
        seen = keys & (i[None, :] <= i[:, None])
    elif kind == "right_to_left":
        seen = keys & (i[None, :] >= i[:, None])
    elif kind == "seq2seq":
        if segment_ids is None:
            raise ValueError("the seq2seq mask needs segment_ids (0 source, 1 target)")
        source_key = (segment_ids == 0)[:, None, :]  # (B, 1, T)
        target_query = (segment_ids == 1)[:, :, None]  # (B, T, 1)
        seen = keys & (source_key | (target_query & (i[None, :] <= i[:, None])))
    else:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(KINDS)}")
    return torch.where(real[:, :, None], seen, keys)  # padding queries see every real token


def pick_kind(mixture: dict[MaskKind, float], generator: torch.Generator | None = None) -> MaskKind:
    """One mask kind drawn with the probabilities of ``mixture`` (weights, normalised here)."""
    kinds = [k for k, w in mixture.items() if w > 0]
    weights = torch.tensor([mixture[k] for k in kinds], dtype=torch.float64)
    return kinds[int(torch.multinomial(weights, 1, generator=generator))]


def split_segments(attention_mask: Tensor, maskable: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Segment ids for seq2seq on one-segment rows: the target (1) starts at a random maskable token of each row, after the first.

    Args:
        attention_mask: ``(B, T)`` 1 for real tokens.
        maskable: ``(B, T)`` True for ordinary (non-special) tokens.
        generator: the random source.

    Returns:
        ``(B, T)`` long: 0 before the cut, 1 from it to the last real token, 0 on padding.
    """
    B, T = attention_mask.shape
    starts: Sequence[int] = []
    cuts = []
    for row in maskable.bool().tolist():
        starts = [j for j, ok in enumerate(row) if ok][1:]  # a source of at least one ordinary token
        cuts.append(starts[int(torch.randint(len(starts), (1,), generator=generator))] if starts else T)
    cut = torch.tensor(cuts, device=attention_mask.device)[:, None]  # (B, 1)
    pos = torch.arange(T, device=attention_mask.device)[None, :]
    return ((pos >= cut) & attention_mask.bool()).long()
