"""Greedy decoding for the encoder-decoder Transformer, and the step machinery beam search shares.

The source is encoded once; the decoder then runs one step per output token
(Vaswani et al. 2017, section 3: "at each step the model is auto-regressive, consuming
the previously generated symbols as additional input when generating the next"). With
``use_cache=True`` each step feeds only the newest token and the decoder's KV caches
(:mod:`attnkit.attention.cache`) hold the keys and values of the earlier ones; with
``use_cache=False`` each step recomputes the whole prefix, the O(T^2)-per-step reference.

Conventions shared by :func:`greedy_decode` and :func:`~attnkit.generation.beam.beam_search`:

* The decoder starts from ``config.bos_id``. ``max_len`` counts generated tokens, EOS
  included; the returned ids exclude BOS and EOS and are right-padded with ``pad_id``, so
  a row shorter than ``max_len`` ended with EOS and a row of exactly ``max_len`` tokens
  was cut off without one.
* ``pad_id`` is never generated (its log-probability is set to -inf, as fairseq does):
  a generated pad could not be told apart from the padding. Other ids, BOS included,
  may be generated. When ``pad_id == eos_id`` nothing is forbidden.
* Rows (greedy) or examples (beam search) that have finished are dropped from the batch,
  caches included, so the remaining steps cost only what is still being decoded.
* Everything runs under :func:`torch.inference_mode`. The caller puts the model in eval
  mode (``model.eval()``); in training mode dropout makes decoding random, and a warning
  is issued. Log-probabilities are computed in float32 whatever the model's dtype.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from attnkit.attention.cache import LayerCache, reorder_caches
from attnkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from attnkit.models.transformer import Transformer

DEFAULT_EXTRA_LEN = 50  # default max_len = source length + 50 (Vaswani et al. 2017, section 6.1)


def check_inputs(model: Transformer, src: Tensor, max_len: int | None) -> int:
    """Validate ``src: (B, Ts)`` and return the number of decoding steps.

    Args:
        model: the encoder-decoder model (its config gives the position limit).
        src: source token ids, right-padded with ``pad_id``.
        max_len: requested output length bound, or ``None`` for ``Ts + 50`` capped at
            ``model.config.max_len``.

    Returns:
        The maximum number of generated tokens (EOS included).

    Raises:
        DataError: ``src`` is not a non-empty ``(B, Ts)`` integer tensor or is longer
            than ``model.config.max_len``.
        ConfigError: ``max_len`` is not in ``[1, model.config.max_len]``.
    """
    limit = model.config.max_len
    if src.dim() != 2:
        raise DataError(f"src must be (batch, length) token ids, got shape {tuple(src.shape)}")
    if src.dtype.is_floating_point or src.dtype.is_complex or src.dtype == torch.bool:
        raise DataError(f"src must hold integer token ids, got dtype {src.dtype}")
    if src.shape[0] == 0:
        raise DataError("src is an empty batch (0 rows); nothing to decode")
    if src.shape[1] == 0:
        raise DataError("src has length 0; every source needs at least one token")
    if src.shape[1] > limit:
        raise DataError(
            f"src length {src.shape[1]} exceeds the model's max_len={limit}; truncate the source"
        )
    if max_len is None:
        return min(src.shape[1] + DEFAULT_EXTRA_LEN, limit)
    if not 1 <= max_len <= limit:
        raise ConfigError(f"max_len={max_len!r} must be in [1, {limit}] (the model's max_len={limit})")
    return max_len


def warn_if_training(model: Transformer) -> None:
    if model.training:
        warnings.warn(
            "decoding a model in training mode: dropout makes the output random; call model.eval() first",
            stacklevel=3,
        )


class DecoderSteps:
    """Runs the decoder one target position at a time over a batch of rows.

    Each row is one partial output (a sentence for greedy search, a hypothesis for beam
    search). The row's prefix, BOS first, is kept here; :meth:`advance` appends a token
    to every row and can at the same time select or reorder rows, which follows
    beam search's choices and drops finished rows, in the prefix, the encoder output and
    the KV caches alike.

    Args:
        model: the encoder-decoder model.
        memory: encoder output ``(R, Ts, d_model)``, one row per decoder row.
        src_mask: source padding mask ``(R, 1, 1, Ts)``.
        src_bias: the same padding as the score bias every cross-attention layer shares
            (:meth:`~attnkit.models.transformer.Transformer.source_bias`); given, it is kept
            in place of ``src_mask``.
        max_len: the most tokens the decoder will be fed (the cache capacity).
        use_cache: feed only the newest token and keep keys/values in KV caches, or
            recompute the whole prefix at every step.
    """

    def __init__(self, model: Transformer, memory: Tensor, src_mask: Tensor, max_len: int, use_cache: bool,
                 src_bias: Tensor | None = None) -> None:
        c = model.config
        self.model = model
        self.memory = memory  # (R, Ts, d_model)
        # one of the two source-padding forms is carried (and reordered): the bias if given
        self.src_mask = src_mask if src_bias is None else None  # (R, 1, 1, Ts)
        self.src_bias = src_bias  # (R, 1, 1, Ts)
        # A decoder with no layers has no caches to carry the position offset; recompute instead.
        self.caches: list[LayerCache] | None = (
            model.new_caches(max_len) if use_cache and c.n_decoder_layers > 0 else None
        )
        self.prefix = torch.full((memory.shape[0], 1), c.bos_id, dtype=torch.long, device=memory.device)  # (R, 1)
        self.forbidden = c.pad_id if c.pad_id != c.eos_id else None

    @property
    def generated(self) -> Tensor:
        """The tokens generated so far, ``(R, t)`` (BOS left out)."""
        return self.prefix[:, 1:]

    def log_probs(self) -> Tensor:
        """Log-probabilities of the next token, ``(R, V)`` float32, pad forbidden."""
        tgt = self.prefix[:, -1:] if self.caches is not None else self.prefix  # (R, 1) or (R, 1 + t)
        logits, _, _ = self.model.decode(tgt, self.memory, self.src_mask, caches=self.caches, src_bias=self.src_bias)  # (R, T, V)
        logp = torch.log_softmax(logits[:, -1].float(), dim=-1)  # (R, V)
        if self.forbidden is not None:
            logp[:, self.forbidden] = float("-inf")
        return logp

    def advance(self, tokens: Tensor, rows: Tensor | None = None, *, new_sources: bool = True) -> None:
        """Keep rows ``rows`` (all, in order, if ``None``) and append ``tokens: (R',)`` to them.

        Args:
            tokens: the next token of each kept row.
            rows: indices of the rows to keep, possibly repeated or reordered.
            new_sources: whether ``rows`` may change which source a row belongs to. Beam
                search reorders hypotheses within an example, where the encoder output
                rows are identical, and passes ``False`` to skip copying them.
        """
        if rows is not None:
            self.prefix = self.prefix.index_select(0, rows)  # (R', 1 + t)
            if self.caches is not None:
                reorder_caches(self.caches, rows, cross=new_sources)
            if new_sources:
                self.memory = self.memory.index_select(0, rows)  # (R', Ts, d_model)
                if self.src_bias is not None:
                    self.src_bias = self.src_bias.index_select(0, rows)  # (R', 1, 1, Ts)
                else:
                    self.src_mask = self.src_mask.index_select(0, rows)  # (R', 1, 1, Ts)
        self.prefix = torch.cat([self.prefix, tokens.unsqueeze(1)], dim=1)  # (R', 2 + t)


def start(model: Transformer, src: Tensor, copies: int, max_len: int, use_cache: bool) -> DecoderSteps:
    """Encode ``src: (B, Ts)`` once and set up ``B * copies`` decoder rows (row ``b * copies + k``).

    The source padding becomes one score bias, built here once, that every encoder and
    cross-attention layer shares at every step (as in ``Transformer.forward``), instead of a
    mask each layer turns into a bias again on every call (host work at every decoding step)."""
    src_mask = model.source_mask(src)  # (B, 1, 1, Ts)
    src_bias = model.source_bias(src_mask, model.lm_head.weight)  # (B, 1, 1, Ts) or None
    memory, _ = model.encode(src, src_mask, src_bias=src_bias)  # (B, Ts, d_model)
    if copies > 1:
        memory = memory.repeat_interleave(copies, dim=0)  # (B * copies, Ts, d_model)
        if src_bias is not None:  # DecoderSteps keeps the bias alone
            src_bias = src_bias.repeat_interleave(copies, dim=0)  # (B * copies, 1, 1, Ts)
        else:
            src_mask = src_mask.repeat_interleave(copies, dim=0)  # (B * copies, 1, 1, Ts)
    return DecoderSteps(model, memory, src_mask, max_len, use_cache, src_bias)


@torch.inference_mode()
def greedy_decode(model: Transformer, src: Tensor, *, max_len: int | None = None, use_cache: bool = True) -> Tensor:
    """Greedy decoding: at every step take the most probable next token.

    Args:
        model: an encoder-decoder :class:`~attnkit.models.transformer.Transformer` in eval
            mode, on the device of ``src``; any floating dtype.
        src: source token ids ``(B, Ts)``, right-padded with ``config.pad_id``.
        max_len: the most tokens to generate per row, EOS included (default: ``Ts + 50``
            capped at ``config.max_len``).
        use_cache: decode incrementally with KV caches (each step feeds one token) or
            recompute the full prefix at every step (the reference and benchmark baseline).

    Returns:
        ``(B, T_out)`` token ids without BOS and EOS, right-padded with ``pad_id``;
        ``T_out`` is the longest row's length (``<= max_len``, possibly 0).

    Raises:
        DataError: empty batch, empty or over-long source (longer than ``config.max_len``).
        ConfigError: ``max_len`` outside ``[1, config.max_len]``.
    """
    steps_total = check_inputs(model, src, max_len)
    warn_if_training(model)
    c = model.config
    b = src.shape[0]
    steps = start(model, src, 1, steps_total, use_cache)
    out = torch.full((b, steps_total), c.pad_id, dtype=torch.long, device=src.device)  # (B, max_len)
    active = torch.arange(b, device=src.device)  # (A,) batch index of each decoder row
    out_len = 0
    for t in range(steps_total):
        token = steps.log_probs().argmax(dim=-1)  # (A,)
        is_eos = token == c.eos_id  # (A,)
        out[active, t] = token.masked_fill(is_eos, c.pad_id)
        n_eos = int(is_eos.sum())  # one host sync per step
        if n_eos < token.shape[0]:
            out_len = t + 1
        if n_eos == token.shape[0] or t == steps_total - 1:
            break
        if n_eos == 0:
            steps.advance(token)
        else:
            keep = (~is_eos).nonzero().squeeze(1)  # (A',) rows still decoding
            active = active.index_select(0, keep)
            steps.advance(token.index_select(0, keep), keep)
    return out[:, :out_len]
