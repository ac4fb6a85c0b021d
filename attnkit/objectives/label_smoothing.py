"""Label-smoothed cross entropy (Vaswani et al. 2017, section 5.4; Szegedy et al. 2016).

"During training, we employed label smoothing of value eps_ls = 0.1": the one-hot
target is replaced by the mixture

    q(k) = (1 - eps) * [k == y] + eps / V

and the loss is the cross entropy ``-sum_k q(k) log p(k)``. This is the convention
of ``torch.nn.CrossEntropyLoss(label_smoothing=eps)``: the smoothing mass is spread
uniformly over all ``V`` classes, the true class included. Written out,

    loss = (1 - eps) * (-log p(y)) + eps * mean_k(-log p(k)).

Deviations from ``torch.nn.CrossEntropyLoss`` (no class weights are supported):

* the loss is always computed, and returned, in float32, also for bf16/fp16 logits;
* ``reduction="mean"`` over a batch whose targets are all ``ignore_index`` returns
  0.0 (with zero gradient) instead of nan.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def _check_inputs(logits: Tensor, target: Tensor, epsilon: float, reduction: str) -> None:
    if logits.dim() < 1:
        raise ValueError(f"logits must have a class dimension, got shape {tuple(logits.shape)}")
    if tuple(target.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}; "
            "expected logits (..., V) and target (...)"
        )
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class ids, got dtype {target.dtype}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon={epsilon!r} is not allowed; expected a number in [0, 1]")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is not allowed; expected one of {', '.join(map(repr, _REDUCTIONS))}")


def _token_losses(logits: Tensor, target: Tensor, epsilon: float, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Per-token smoothed cross entropy in float32 (0 where ignored) and the keep mask."""
    log_p = torch.log_softmax(logits.float(), dim=-1)  # (..., V)
    keep = target != ignore_index  # (...)
    safe_target = torch.where(keep, target, torch.zeros_like(target)).long()  # (...)
    nll = -log_p.gather(-1, safe_target.unsqueeze(-1)).squeeze(-1)  # (...)
    if epsilon == 0.0:
        loss = nll
    else:
        # eps/V on every class: -sum_k (eps/V) log p(k) = eps * mean_k(-log p(k))
        loss = (1.0 - epsilon) * nll - epsilon * log_p.mean(dim=-1)  # (...)
    return loss.masked_fill(~keep, 0.0), keep


def label_smoothed_cross_entropy(
    logits: Tensor,
    target: Tensor,
    epsilon: float = 0.1,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> Tensor:
    """Cross entropy against label-smoothed targets (Vaswani et al. 2017, section 5.4).

    Args:
        logits: unnormalised scores, shape ``(..., V)``, any float dtype.
        target: class ids, shape ``(...)``; positions equal to ``ignore_index`` are
            excluded from the loss.
        epsilon: smoothing mass ``eps_ls`` spread over all ``V`` classes (0.1 in the paper).
        ignore_index: target value to ignore (the padding id, typically).
        reduction: ``"mean"`` over the non-ignored tokens, ``"sum"`` over them, or
            ``"none"`` for per-token losses (0 at ignored positions).

    Returns:
        A float32 scalar for ``"mean"``/``"sum"``, or a float32 tensor of shape
        ``(...)`` for ``"none"``.

    Raises:
        ValueError: on mismatched shapes, a non-integer target, ``epsilon`` outside
            [0, 1] or an unknown ``reduction``.
    """
    _check_inputs(logits, target, epsilon, reduction)
    loss, keep = _token_losses(logits, target, epsilon, ignore_index)
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    return total / keep.sum().clamp(min=1)


def seq2seq_loss(logits: Tensor, target: Tensor, *, epsilon: float, pad_id: int) -> tuple[Tensor, Tensor]:
    """Mean label-smoothed loss over the non-padding target tokens, and their count.

    ``target`` must already be aligned with ``logits`` (the decoder's output at
    position ``t`` predicts ``target[..., t]``); this function does no shifting.

    Args:
        logits: decoder output scores, shape ``(B, T, V)`` (or any ``(..., V)``).
        target: target token ids, shape ``(B, T)``; ``pad_id`` positions are ignored.
        epsilon: label-smoothing mass (0.1 in the paper).
        pad_id: padding token id.

    Returns:
        ``(loss, n_tokens)``: the float32 mean loss over the non-padding tokens
        (0.0 when there are none) and their number as an int64 scalar tensor (a
        tensor, so that no device synchronisation is forced; multiply the two to
        get the summed loss for accumulation across batches).
    """
    _check_inputs(logits, target, epsilon, "mean")
    loss, keep = _token_losses(logits, target, epsilon, pad_id)
    n_tokens = keep.sum()
    return loss.sum() / n_tokens.clamp(min=1), n_tokens
