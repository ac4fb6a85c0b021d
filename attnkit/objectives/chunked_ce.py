"""Cross-entropy through the output projection without the full logits (chunked LM head and loss).

The causal LM loss (Radford et al. 2018, eq. (1)) over ``N`` target tokens,

    L = -1/N sum_i log softmax(W h_i + b)_{y_i},

needs the logits ``W h_i + b`` of every token: ``N x V`` floats, and as many again for their
gradient. With a vocabulary of 50,257 and 16 x 1024 tokens that is 3.3 GB in float32, kept from
the forward pass to the backward pass whether or not the layers below are checkpointed. The sum
over ``i`` splits over chunks of ``C`` tokens: each chunk's logits are computed, its summed loss
taken and the logits dropped; in the backward pass ``torch.utils.checkpoint`` (non-reentrant)
recomputes one chunk's logits from its hidden states and the weight, back-propagates through
them and drops them again (Chen et al. 2016, Training Deep Nets with Sublinear Memory Cost,
applied to the output layer). At most one chunk's ``C x V`` logits and their gradient exist at
a time; the loss and every gradient are those of the plain loss up to float rounding, for one
more ``C x d x V`` matrix product per chunk.

:func:`head_loss` runs a model whose ``lm_head`` is an ``nn.Linear`` (GPT) with that head
replaced, for the one call, by the chunked loss: the loss is computed inside the model's
forward, so DistributedDataParallel and FSDP see the head's weight used in their forward pass
(a tied embedding, or an untied head, alike).
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK = 4096


def _chunk_loss(h: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor, *, ignore_index: int, label_smoothing: float) -> Tensor:
    """Summed float32 cross-entropy of one chunk: ``h: (C, d)``, ``y: (C,)``."""
    logits = F.linear(h, weight, bias).float()  # (C, V): this chunk's only
    return F.cross_entropy(logits, y, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction="sum")


def chunked_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    targets: Tensor,
    *,
    bias: Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy of ``F.linear(hidden, weight, bias)`` against ``targets``, ``chunk`` tokens at a time.

    Equals ``F.cross_entropy(F.linear(hidden, weight, bias).flatten(0, -2).float(),
    targets.flatten(), ignore_index=..., label_smoothing=...)`` (mean over the counted targets;
    NaN where none counts, as there), with the logits of at most ``chunk`` tokens in memory. With
    gradients on, each chunk runs under non-reentrant ``torch.utils.checkpoint``, which replays
    the autocast state of the forward pass when it recomputes.

    Args:
        hidden: ``(..., d)`` final hidden states.
        weight: ``(V, d)`` output projection (a tied embedding matrix).
        targets: ``hidden.shape[:-1]`` target ids; ``ignore_index`` does not count.
        bias: ``(V,)`` or None.
        chunk: tokens per chunk.
        ignore_index: the target id that does not count (padding).
        label_smoothing: the smoothing mass (Szegedy et al. 2016, section 7), as ``F.cross_entropy``.

    Returns:
        ``(mean loss in float32, number of counted target tokens)``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, d)
    y = targets.reshape(-1)  # (N,)
    fn = functools.partial(_chunk_loss, ignore_index=ignore_index, label_smoothing=label_smoothing)
    grads = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad))
    total = h.new_zeros((), dtype=torch.float32)
    for s in range(0, len(y), chunk):
        part = (checkpoint(fn, h[s : s + chunk], weight, bias, y[s : s + chunk], use_reentrant=False) if grads
                else fn(h[s : s + chunk], weight, bias, y[s : s + chunk]))
        total = total + part
    n = (y != ignore_index).sum()
    return total / n, n


@contextmanager
def _head_replaced(head: nn.Module, forward: Any) -> Iterator[None]:
    had = "forward" in head.__dict__
    previous = head.__dict__.get("forward")
    head.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        if had:
            head.forward = previous  # type: ignore[method-assign]
        else:
            del head.forward


def head_loss(
    model: nn.Module, ids: Tensor, targets: Tensor, *, chunk: int = DEFAULT_CHUNK, ignore_index: int = -100,
    label_smoothing: float = 0.0, **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """The mean next-token loss of ``model(ids, **kwargs)`` against ``targets``, its logits never whole.

    For the one call, ``model.lm_head`` (an ``nn.Linear``) returns the
    :func:`chunked_cross_entropy` of the hidden states it receives instead of their logits; the
    model returns that loss where its logits would be.

    Args:
        model: a language model with an ``lm_head`` linear layer (possibly wrapped by DDP).
        ids: ``(B, T)`` inputs.
        targets: ``(B, T)`` next tokens.
        chunk: tokens per chunk.
        ignore_index: the target id that does not count.
        label_smoothing: as :func:`chunked_cross_entropy`.
        **kwargs: passed to the model.

    Returns:
        ``(mean loss in float32, number of counted target tokens)``.

    Raises:
        TypeError: the model has no linear ``lm_head``.
    """
    head = getattr(model, "lm_head", None)
    if not isinstance(head, nn.Linear):
        raise TypeError(f"{type(model).__name__} has no linear lm_head for a chunked loss")
    counted: list[Tensor] = []

    def forward(h: Tensor) -> Tensor:
        loss, n = chunked_cross_entropy(h, head.weight, targets, bias=head.bias, chunk=chunk, ignore_index=ignore_index,
                                        label_smoothing=label_smoothing)
        counted.append(n)
        return loss

    with _head_replaced(head, forward):
        loss = model(ids, **kwargs).logits  # the head's output: the loss
    return loss, counted[0]
