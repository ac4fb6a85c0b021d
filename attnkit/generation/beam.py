"""Beam search with the GNMT length penalty, batched over examples and hypotheses.

The Transformer paper (Vaswani et al. 2017, section 6.1) decodes with "beam search with a
beam size of 4 and length penalty alpha = 0.6", the penalty of Wu et al. 2016 (GNMT),
eq. 14 (without its coverage term):

    s(Y, X) = log P(Y | X) / lp(Y),    lp(Y) = (5 + |Y|)^alpha / (5 + 1)^alpha

All ``B * beam_size`` hypotheses run through the decoder as one batch (row
``b * beam_size + k`` is hypothesis k of example b). At every step:

1. Each alive hypothesis is extended by every token; the ``2 * beam_size`` best extensions
   per example (by summed log-probability) are candidates, as in fairseq and tensor2tensor.
2. EOS candidates ranked among the top ``beam_size`` finish: their score s(Y, X) counts
   EOS in |Y| (as tensor2tensor does); only the best finished hypothesis per example is
   kept, as only it is returned. EOS candidates ranked lower are dropped (fairseq's rule;
   with ``beam_size=1`` and ``length_penalty=0`` this makes beam search greedy search).
3. The best ``beam_size`` non-EOS candidates stay alive; the prefixes and KV caches follow
   them through :func:`~attnkit.attention.cache.reorder_caches`.
4. An example stops once its best finished score is at least the best score any alive
   hypothesis could still reach: log-probabilities only decrease, so an alive hypothesis
   with sum s <= 0 ends with a score at most s / max lp(n) over the lengths n it can still
   reach (tensor2tensor's bound, which uses lp(max_len) as alpha >= 0). The bound is exact,
   so stopping early returns what running to ``max_len`` would. Stopped examples leave the
   batch.

Hypotheses still alive after ``max_len`` tokens finish without EOS, scored by their summed
log-probabilities over lp(max_len). Output conventions (no BOS/EOS, pad never generated,
eval mode, float32 scores) are those of :mod:`attnkit.generation.seq2seq`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, overload

import torch
from torch import Tensor

from attnkit.errors import ConfigError
from attnkit.generation.seq2seq import check_inputs, start, warn_if_training

if TYPE_CHECKING:
    from attnkit.models.transformer import Transformer


def gnmt_length_penalty(length: int, alpha: float) -> float:
    """lp(Y) = ((5 + |Y|) / 6)^alpha, Wu et al. 2016 eq. 14; 1 for ``alpha = 0``."""
    return ((5.0 + length) / 6.0) ** alpha


class BestFinished:
    """The best finished hypothesis of each example: its score, tokens and length."""

    def __init__(self, batch: int, max_len: int, pad_id: int, device: torch.device) -> None:
        self.score = torch.full((batch,), float("-inf"), device=device)  # (B,)
        self.tokens = torch.full((batch, max_len), pad_id, dtype=torch.long, device=device)  # (B, max_len)
        self.length = torch.zeros(batch, dtype=torch.long, device=device)  # (B,)
        self.pad_id = pad_id

    def offer(self, examples: Tensor, scores: Tensor, seqs: Tensor) -> None:
        """Keep, per example, the better of the stored hypothesis and the best offered one.

        Args:
            examples: ``(A,)`` batch indices of the examples offered for.
            scores: ``(A, K)`` normalised scores, -inf where nothing is offered.
            seqs: ``(A, K, L)`` the offered token ids (without BOS and EOS).
        """
        a, _, length = seqs.shape
        score, j = scores.max(dim=1)  # (A,)
        better = score > self.score.index_select(0, examples)  # (A,)
        seq = seqs[torch.arange(a, device=seqs.device), j]  # (A, L)
        padded = torch.full((a, self.tokens.shape[1]), self.pad_id, dtype=torch.long, device=seqs.device)
        padded[:, :length] = seq  # (A, max_len)
        self.score[examples] = torch.where(better, score, self.score[examples])
        self.tokens[examples] = torch.where(better.unsqueeze(1), padded, self.tokens[examples])
        self.length[examples] = torch.where(better, torch.full_like(self.length[examples], length), self.length[examples])


@overload
def beam_search(
    model: Transformer, src: Tensor, *, beam_size: int = ..., length_penalty: float = ...,
    max_len: int | None = ..., use_cache: bool = ..., return_scores: Literal[False] = ...,
) -> Tensor: ...
@overload
def beam_search(
    model: Transformer, src: Tensor, *, beam_size: int = ..., length_penalty: float = ...,
    max_len: int | None = ..., use_cache: bool = ..., return_scores: Literal[True],
) -> tuple[Tensor, Tensor]: ...


@torch.inference_mode()
def beam_search(
    model: Transformer,
    src: Tensor,
    *,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    max_len: int | None = None,
    use_cache: bool = True,
    return_scores: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Beam search for the highest-scoring output, s(Y, X) = log P(Y | X) / lp(Y).

    Args:
        model: an encoder-decoder :class:`~attnkit.models.transformer.Transformer` in eval
            mode, on the device of ``src``; any floating dtype.
        src: source token ids ``(B, Ts)``, right-padded with ``config.pad_id``.
        beam_size: hypotheses kept alive per example (the paper uses 4).
        length_penalty: alpha of the GNMT length penalty (the paper uses 0.6; 0 scores
            by the plain summed log-probability).
        max_len: the most tokens to generate, EOS included (default: ``Ts + 50`` capped
            at ``config.max_len``).
        use_cache: decode incrementally with KV caches, or recompute every prefix.
        return_scores: also return each returned hypothesis's score.

    Returns:
        ``(B, T_out)`` token ids of the best hypothesis per example, without BOS and EOS,
        right-padded with ``pad_id``; with ``return_scores`` also its ``(B,)`` float32
        score log P(Y | X) / lp(Y), where Y includes the EOS if it ended with one.

    Raises:
        DataError: empty batch, empty or over-long source (longer than ``config.max_len``).
        ConfigError: ``beam_size < 1``, or ``max_len`` outside ``[1, config.max_len]``.
    """
    n_steps = check_inputs(model, src, max_len)
    if beam_size < 1:
        raise ConfigError(f"beam_size={beam_size!r} must be at least 1")
    warn_if_training(model)
    c = model.config
    k, v, eos = beam_size, c.tgt_vocab_size, c.eos_id
    b, device = src.shape[0], src.device
    steps = start(model, src, k, n_steps, use_cache)
    best = BestFinished(b, n_steps, c.pad_id, device)
    active = torch.arange(b, device=device)  # (A,) batch index of each searching example
    # All beams start as the same empty hypothesis; only beam 0 may extend it at first.
    alive = torch.full((b, k), float("-inf"), device=device)  # (A, K) summed log-probs
    alive[:, 0] = 0.0
    n_cand = min(2 * k, k * v)
    cand_rank = torch.arange(n_cand, device=device)  # (2K,)
    lp = [gnmt_length_penalty(n, length_penalty) for n in range(n_steps + 1)]

    for t in range(n_steps):  # alive hypotheses hold t tokens
        a = active.shape[0]
        logp = steps.log_probs()  # (A*K, V)
        scores = (alive.view(a * k, 1) + logp).view(a, k * v)  # (A, K*V)
        top, idx = scores.topk(n_cand, dim=1)  # (A, 2K), best first
        origin, token = idx // v, idx % v  # (A, 2K) beam extended, token appended
        is_eos = token == eos
        rows = torch.arange(a, device=device).unsqueeze(1) * k  # (A, 1) first row of each example
        prefixes = steps.generated  # (A*K, t)

        # EOS among the top K candidates: finished, with |Y| = t + 1.
        fin = torch.where(is_eos[:, :k], top[:, :k] / lp[t + 1], float("-inf"))  # (A, K)
        best.offer(active, fin, prefixes[(rows + origin[:, :k]).view(-1)].view(a, k, t))

        # The best K non-EOS candidates stay alive.
        pick = (cand_rank + is_eos * n_cand).argsort(dim=1)[:, :k]  # (A, K)
        alive = top.gather(1, pick)  # (A, K)
        token = token.gather(1, pick)  # (A, K)
        parent = (rows + origin.gather(1, pick)).view(-1)  # (A*K,) row each new hypothesis extends

        if t == n_steps - 1:  # out of steps: the alive hypotheses finish without EOS
            seqs = torch.cat([prefixes.index_select(0, parent), token.view(-1, 1)], dim=1)  # (A*K, t+1)
            best.offer(active, alive / lp[n_steps], seqs.view(a, k, t + 1))
            break

        # Best score an alive hypothesis can still reach, finishing at length t+2 .. max_len.
        bound = alive.max(dim=1).values / max(lp[t + 2], lp[n_steps])  # (A,)
        done = best.score.index_select(0, active) >= bound  # (A,)
        n_done = int(done.sum())  # one host sync per step
        if n_done == a:
            break
        if n_done:
            keep = (~done).nonzero().squeeze(1)  # (A',)
            active, alive, token = active[keep], alive[keep], token[keep]
            parent = parent.view(a, k)[keep].view(-1)
        steps.advance(token.view(-1), parent, new_sources=n_done > 0)

    tokens = best.tokens[:, : int(best.length.max())]  # (B, T_out)
    return (tokens, best.score) if return_scores else tokens
