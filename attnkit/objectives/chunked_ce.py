"""Cross-entropy through the output projection without the full logits (chunked LM head and loss).

The causal LM loss (Radford et al. 2018, eq. (1)) over the ``N`` counted target tokens,

    L = -1/N sum_i log softmax(z_i)_{y_i},    z_i = W h_i + b,

needs the logits ``z_i`` of every token: ``N x V`` floats, and as many again for their gradient.
With a vocabulary of 50,257 and 16 x 1024 tokens that is 3.3 GB in float32, kept from the forward
pass to the backward pass whether or not the layers below are checkpointed. The sum over ``i``
splits over chunks of ``C`` tokens, and so do the gradients, because the gradient of the
cross-entropy with respect to the logits has a closed form (the softmax minus the target
distribution, Bridle 1990; Goodfellow et al. 2016, section 6.2.2.3):

    dL/dz_i = (softmax(z_i) - q_i) / N,    q_i = (1 - eps) onehot(y_i) + eps / V,

with ``eps`` the label smoothing (Szegedy et al. 2016, section 7; ``eps = 0``: one-hot) and
``dL/dz_i = 0`` for an ignored target. The chain rule through ``z = W h + b`` then gives

    dL/dh_i = dL/dz_i W,    dL/dW = sum_i dL/dz_i^T h_i,    dL/db = sum_i dL/dz_i.

:class:`LinearCrossEntropy` therefore does all the work in the forward pass: for each chunk it
computes the logits, the chunk's summed loss and ``dL/dz`` from the same logits, then at once the
chunk's rows of ``dL/dh`` (kept, ``N x d`` in all) and its terms of ``dL/dW`` and ``dL/db``
(accumulated in float32), and drops the logits. The backward pass only multiplies the kept
gradients by the incoming scalar gradient. At most one chunk's ``C x V`` logits and their
gradient exist at a time, each chunk's logits are computed once, and nothing is recomputed; the
loss and every gradient are those of the plain loss up to float rounding (the per-chunk
accumulation of ``dL/dW`` differs from one full product only in summation order).

:func:`head_loss` runs a model whose ``lm_head`` is an ``nn.Linear`` (GPT) with that head
replaced, for the one call, by the chunked loss: the loss is computed inside the model's
forward, so DistributedDataParallel and FSDP see the head's weight used in their forward pass
(a tied embedding, or an untied head, alike).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

DEFAULT_CHUNK = 4096
_LOW = (torch.float16, torch.bfloat16)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs ``F.linear`` in on this device type, or None where autocast is off."""
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None


def _cast(t: Tensor | None, dtype: torch.dtype | None) -> Tensor | None:
    """As autocast casts an input of a lower-precision op: floating tensors other than float64, to ``dtype``."""
    if t is None or dtype is None or not t.is_floating_point() or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32, or float64 for float64: the dtype of the softmax, the loss and the accumulated gradients."""
    return torch.promote_types(dtype, torch.float32)


def _chunks(
    h: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor, n: Tensor, *, chunk: int, ignore_index: int,
    label_smoothing: float, amp: torch.dtype | None, need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """The summed loss and, where ``need`` says, ``(dL/dh, dL/dW, dL/db)`` of the mean loss, chunk by chunk.

    Args:
        h: ``(N, d)`` hidden states.
        weight: ``(V, d)``.
        bias: ``(V,)`` or None.
        y: ``(N,)`` targets.
        n: the number of counted targets (a 0-d tensor).
        chunk: tokens per chunk.
        ignore_index: the target that does not count.
        label_smoothing: ``eps``.
        amp: the autocast dtype of the caller, or None.
        need: whether the gradients of ``h``, ``weight`` and ``bias`` are wanted.

    Returns:
        ``(summed loss, dL/dh in h's dtype, dL/dW and dL/db in float32 or wider)``; None where not wanted.
    """
    need_h, need_w, need_b = need[0], need[1], need[2] and bias is not None
    w, b = _cast(weight, amp), _cast(bias, amp)  # once for all chunks, as autocast's weight cache
    vocab, eps = weight.shape[0], label_smoothing
    total: Tensor | None = None
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = torch.zeros(weight.shape, dtype=_wide(weight.dtype), device=weight.device) if need_w else None
    grad_b = torch.zeros(bias.shape, dtype=_wide(bias.dtype), device=bias.device) if need_b and bias is not None else None
    with torch.autocast(h.device.type, enabled=False):  # the casts above are autocast's
        for s in range(0, len(y), chunk):
            hc, yc = _cast(h[s : s + chunk], amp), y[s : s + chunk]  # (C, d), (C,)
            logits = F.linear(hc, w, b)  # (C, V) in the autocast dtype
            logp = torch.log_softmax(logits, dim=-1, dtype=_wide(logits.dtype))  # (C, V): log p_ij in float32
            del logits
            counted = yc != ignore_index
            y_safe = yc.masked_fill(~counted, 0)
            row = -logp.gather(1, y_safe[:, None]).squeeze(1)  # -log p(y_i)
            if eps:
                row = (1.0 - eps) * row - eps * logp.mean(dim=-1)  # + eps * (-1/V sum_j log p_ij)
            part = torch.where(counted, row, 0.0).sum()
            total = part if total is None else total + part
            if not (need_h or need_w or need_b):
                continue
            r = counted.to(logp.dtype) / n.clamp(min=1)  # (C,): 1/N per counted row, 0 per ignored one
            g = logp.exp_()  # softmax(z_i), in place of the log-probabilities
            g.scatter_add_(1, y_safe[:, None], g.new_full((len(yc), 1), -(1.0 - eps)))  # - (1 - eps) onehot(y_i)
            if eps:
                g.sub_(eps / vocab)  # - eps / V
            if grad_b is not None:
                grad_b += g.t() @ r  # (V,): sum_i r_i (softmax(z_i) - q_i)
            # dL/dz = r_i (softmax(z_i) - q_i), written in the products' dtype (the autocast one), as F.linear's backward
            gc = g.mul_(r[:, None]) if g.dtype == hc.dtype else torch.mul(g, r[:, None], out=torch.empty_like(g, dtype=hc.dtype))
            del g, logp
            if grad_h is not None:
                grad_h[s : s + chunk] = gc @ w  # (C, d), as F.linear's backward
            if grad_w is not None:
                grad_w += gc.t() @ hc  # (V, d), added in float32
            del gc
    if total is None:  # no tokens
        total = h.new_zeros((), dtype=_wide(h.dtype))
    return total, grad_h, grad_w, grad_b


class LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``F.linear(h, weight, bias)`` with its gradients computed in the forward pass.

    ``apply(h, weight, bias, y, n, chunk, ignore_index, label_smoothing, amp)`` with ``h: (N, d)``,
    ``y: (N,)`` and ``n`` the counted targets; see the module docstring for the mechanism. The
    gradients are kept with ``save_for_backward``, so the node behaves as any autograd node: a
    second backward through it needs ``retain_graph=True`` on the first (else autograd raises), and
    a loss used several times gets the sum of the incoming gradients. Second derivatives are not
    available (``create_graph=True`` then differentiating again raises).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, h: Tensor, weight: Tensor, bias: Tensor | None, y: Tensor, n: Tensor, chunk: int,
                ignore_index: int, label_smoothing: float, amp: torch.dtype | None) -> Tensor:
        need = ctx.needs_input_grad[:3]  # type: ignore[attr-defined]
        total, grad_h, grad_w, grad_b = _chunks(h, weight, bias, y, n, chunk=chunk, ignore_index=ignore_index,
                                                label_smoothing=label_smoothing, amp=amp, need=need)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)  # type: ignore[attr-defined]
        return total / n

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        kept = ctx.saved_tensors  # type: ignore[attr-defined]
        grads = tuple(None if g is None else (g * grad_out).to(dt) for g, dt in zip(kept, ctx.dtypes))  # type: ignore[attr-defined]
        return (*grads, None, None, None, None, None, None)


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
    NaN where none counts, as there, with zero gradients), with the logits of at most ``chunk``
    tokens in memory. Under autocast the matrix products run in the autocast dtype as
    ``F.linear`` would, the softmax and loss in float32. With gradients on, they are computed
    here (:class:`LinearCrossEntropy`); otherwise only the loss is.

    Args:
        hidden: ``(..., d)`` final hidden states.
        weight: ``(V, d)`` output projection (a tied embedding matrix).
        targets: ``hidden.shape[:-1]`` target ids; ``ignore_index`` does not count.
        bias: ``(V,)`` or None.
        chunk: tokens per chunk.
        ignore_index: the target id that does not count (padding).
        label_smoothing: the smoothing mass (Szegedy et al. 2016, section 7), as ``F.cross_entropy``.

    Returns:
        ``(mean loss in float32 (float64 for float64 inputs), number of counted target tokens)``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, d)
    y = targets.reshape(-1)  # (N,)
    n = (y != ignore_index).sum()
    amp = _autocast_dtype(h.device.type)
    params = (h, weight) if bias is None else (h, weight, bias)
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        loss = LinearCrossEntropy.apply(h, weight, bias, y, n, chunk, ignore_index, label_smoothing, amp)
    else:
        total = _chunks(h, weight, bias, y, n, chunk=chunk, ignore_index=ignore_index, label_smoothing=label_smoothing,
                        amp=amp, need=(False, False, False))[0]
        loss = total / n
    return loss, n


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
