"""The Switch Transformer's auxiliary router losses (Fedus et al. 2022, section 2.2, eq. 4-6).

Load balancing (eq. 4-6), for ``N`` experts over the tokens ``B`` of a batch:

    loss = alpha * N * sum_i f_i * P_i,   f_i = (1/T) sum_x [argmax p(x) = i],   P_i = (1/T) sum_x p_i(x)

``f_i`` is the fraction of tokens *routed* to expert i (by the router's choice, before any token is
dropped for capacity) and ``P_i`` the mean router probability of expert i; the loss is minimal (alpha)
when both are uniform. Router z-loss (ST-MoE, Zoph et al. 2022, eq. 5): the mean over tokens of
``logsumexp(router logits)^2``, which keeps the logits small (coefficient 1e-3).

Both are averaged over the *real* tokens only: padding has no say in the balance. Hugging Face's
``load_balancing_loss_func`` / ``router_z_loss_func`` compute the same quantities over every position
of their ``(groups, tokens, experts)`` input, padding included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def load_balancing_loss(router_logits: Tensor, keep: Tensor | None = None) -> Tensor:
    """``N * sum_i f_i * P_i`` over the kept tokens (eq. 4; multiply by alpha outside).

    Args:
        router_logits: ``(..., N)`` the router's logits per token.
        keep: ``(...)`` True for real tokens (None: all).

    Returns:
        The scalar loss in float32 (0 when no token is kept).
    """
    logits = router_logits.float().reshape(-1, router_logits.shape[-1])  # (T, N)
    n_experts = logits.shape[-1]
    probs = torch.softmax(logits, dim=-1)  # (T, N)
    routed = F.one_hot(probs.argmax(-1), n_experts).float()  # (T, N)
    if keep is None:
        n: Tensor | float = float(max(logits.shape[0], 1))
    else:
        weight = keep.reshape(-1).float()  # (T,) 1 for a real token
        probs, routed = probs * weight[:, None], routed * weight[:, None]  # padding rows zeroed
        n = weight.sum().clamp(min=1.0)  # no host read: an all-padding batch gives 0
    return n_experts * ((routed.sum(0) / n) * (probs.sum(0) / n)).sum()


def router_z_loss(router_logits: Tensor, keep: Tensor | None = None) -> Tensor:
    """Mean over the kept tokens of ``logsumexp(logits)^2`` (ST-MoE eq. 5; multiply by its coefficient outside).

    Args:
        router_logits: ``(..., N)``.
        keep: ``(...)`` True for real tokens (None: all).

    Returns:
        The scalar loss in float32 (0 when no token is kept).
    """
    z = torch.logsumexp(router_logits.float(), dim=-1)  # (...)
    if keep is None:
        return (z**2).sum() / max(z.numel(), 1)
    weight = keep.float()  # 1 for a real token
    return (z**2 * weight).sum() / weight.sum().clamp(min=1.0)


def router_losses(router_logits: Tensor, probs: Tensor, first_choices: Tensor, keep: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """:func:`load_balancing_loss` and :func:`router_z_loss` of one forward, from what the layer already computed.

    The layer's softmax ``probs`` gives ``P_i`` and its per-expert count of first choices gives ``f_i``, so neither
    the softmax nor the argmax is computed again (fewer kernels per layer and step; the same values and gradients).

    Args:
        router_logits: ``(..., N)`` float32 logits.
        probs: ``(..., N)`` their softmax, as the layer computed it (in the graph of the gates).
        first_choices: ``(N,)`` the kept tokens whose first choice each expert is.
        keep: ``(...)`` True for real tokens (None: all).

    Returns:
        ``(balance, z)``, each a float32 scalar.
    """
    n_experts = probs.shape[-1]
    p = probs.reshape(-1, n_experts)  # (T, N)
    z = torch.logsumexp(router_logits.reshape(-1, n_experts), dim=-1)  # (T,)
    if keep is None:
        n: Tensor | float = float(max(p.shape[0], 1))
        p_sum, z_sum = p.sum(0), (z * z).sum()
    else:
        weight = keep.reshape(-1).to(p.dtype)  # (T,) 1 for a real token
        n = weight.sum().clamp(min=1.0)
        p_sum, z_sum = weight @ p, (z * z) @ weight  # padding rows left out
    balance = n_experts * (first_choices.to(p.dtype) * p_sum).sum() / (n * n)
    return balance, z_sum / n
