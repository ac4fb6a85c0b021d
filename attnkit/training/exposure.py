"""Remedies for exposure bias in teacher-forced encoder-decoder training.

A teacher-forced decoder is trained on gold prefixes only and decodes from its own at test time
(exposure bias; Ranzato et al. 2016, section 1). Three remedies, chosen by ``train.exposure.kind``:

* ``scheduled``: scheduled sampling (Bengio et al. 2015) in the two-pass form for Transformers
  (Mihaylova and Martins 2019, section 3): a first, teacher-forced pass without gradients gives
  the model's greedy prediction at every position; the second pass, which is trained, reads at
  each position ``t >= 1`` the gold token ``y_t`` with probability ``eps_i`` and the first
  pass's prediction for position ``t`` (its argmax at ``t - 1``) otherwise. ``eps_i`` decays with
  the optimizer step ``i`` (Bengio et al. 2015, section 2.4): ``linear`` ``max(min_gold, k - c i)``,
  ``exponential`` ``k^i`` (``k < 1``), ``inverse_sigmoid`` ``k / (k + exp(i / k))`` (``k >= 1``),
  each floored at ``min_gold``.
* ``self_feed``: the same two passes with a fixed probability ``prob`` of feeding the model's own
  prediction instead of the gold token.
* ``adversarial``: the decoder's input embeddings ``e`` (tokens and positions, after dropout) are
  perturbed along the gradient of the loss, ``r = epsilon g / ||g||_2`` with ``g = dL/de``, the
  norm taken over each sentence (the fast gradient method with an L2 norm, Miyato et al. 2017,
  eq. 2; Goodfellow et al. 2015, section 5), and the loss is ``(L(e) + L(e + r)) / 2``
  (Goodfellow et al. 2015, eq. 3 with ``alpha = 0.5``).

The loss is the task's (label-smoothed cross-entropy on the gold targets) in every case: only the
decoder's inputs change. Validation and decoding are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from attnkit.config import Config, check

ExposureKind = Literal["none", "scheduled", "self_feed", "adversarial"]


@dataclass(frozen=True, kw_only=True)
class ExposureConfig(Config):
    """What the decoder reads during training (``train.exposure``): see the module docstring.

    ``kind="none"`` is plain teacher forcing. ``schedule``, ``k``, ``c`` and ``min_gold`` set the
    gold-token probability of ``scheduled`` (``k`` defaults to 1.0 for ``linear``, 0.999 for
    ``exponential`` and 500 for ``inverse_sigmoid``); ``prob`` is the probability of a model
    token for ``self_feed``; ``epsilon`` the L2 norm of each sentence's perturbation for
    ``adversarial``.
    """

    kind: ExposureKind = "none"
    schedule: Literal["linear", "exponential", "inverse_sigmoid"] = "inverse_sigmoid"
    k: float | None = None
    c: float = 1e-4
    min_gold: float = 0.0
    prob: float = 0.25
    epsilon: float = 1.0

    def validate(self) -> None:
        check(0.0 <= self.min_gold <= 1.0, "min_gold", self.min_gold, "must be in [0, 1]")
        check(0.0 <= self.prob <= 1.0, "prob", self.prob, "must be in [0, 1] (the probability of feeding a model token)")
        check(self.c >= 0, "c", self.c, "must be >= 0")
        check(self.epsilon > 0, "epsilon", self.epsilon, "must be positive")
        k = self.decay_k
        if self.schedule == "linear":
            check(0.0 <= k <= 1.0, "k", k, "must be in [0, 1] for the linear schedule (the gold probability at step 0)")
        elif self.schedule == "exponential":
            check(0.0 < k < 1.0, "k", k, "must be in (0, 1) for the exponential schedule")
        else:
            check(k >= 1.0, "k", k, "must be >= 1 for the inverse_sigmoid schedule")

    @property
    def decay_k(self) -> float:
        """``k`` of the schedule (its default where unset)."""
        if self.k is not None:
            return self.k
        return {"linear": 1.0, "exponential": 0.999, "inverse_sigmoid": 500.0}[self.schedule]


def gold_probability(cfg: ExposureConfig, step: int) -> float:
    """The probability ``eps_i`` of feeding the gold token at optimizer step ``i = step``.

    Args:
        cfg: the exposure settings (``scheduled`` decays, ``self_feed`` is ``1 - prob``, others 1).
        step: the optimizer step, from 0.

    Returns:
        A probability in [0, 1].
    """
    if cfg.kind == "self_feed":
        return 1.0 - cfg.prob
    if cfg.kind != "scheduled":
        return 1.0
    k = cfg.decay_k
    if cfg.schedule == "linear":
        eps = k - cfg.c * step
    elif cfg.schedule == "exponential":
        eps = k**step
    else:
        eps = k / (k + math.exp(min(step / k, 700.0)))  # exp overflows past 709
    return min(1.0, max(cfg.min_gold, eps))


def mix_inputs(tgt_in: Tensor, predicted: Tensor, gold_prob: float, pad_id: int, *, generator: torch.Generator | None = None) -> Tensor:
    """The second pass's decoder input: gold or predicted token at each position after the first.

    Args:
        tgt_in: ``(B, T)`` gold decoder input ``<s> y_1 ... y_n`` (right-padded).
        predicted: ``(B, T)`` the first pass's argmax; ``predicted[:, t]`` is its guess of ``y_{t+1}``.
        gold_prob: probability of keeping each gold token.
        pad_id: padding id; padded positions stay padding and ``<s>`` stays first.
        generator: optional random generator of the coin flips.

    Returns:
        ``(B, T)`` decoder input.
    """
    if gold_prob >= 1.0:
        return tgt_in
    coins = torch.rand(tgt_in.shape, device=tgt_in.device, generator=generator)  # (B, T)
    model_in = torch.cat([tgt_in[:, :1], predicted[:, :-1]], dim=1)  # (B, T): position t reads the guess made at t - 1
    use_model = (coins >= gold_prob) & (tgt_in != pad_id)
    use_model[:, 0] = False
    return torch.where(use_model, model_in, tgt_in)


def two_pass_inputs(model: nn.Module, src: Tensor, tgt_in: Tensor, gold_prob: float, pad_id: int) -> Tensor:
    """Mihaylova and Martins 2019: a teacher-forced pass without gradients, then :func:`mix_inputs`.

    With ``gold_prob >= 1`` no first pass runs (the input is the gold one, and the random state
    is left as teacher forcing leaves it).
    """
    if gold_prob >= 1.0:
        return tgt_in
    with torch.no_grad():
        predicted = model(src, tgt_in).logits.argmax(-1)  # (B, T)
    return mix_inputs(tgt_in, predicted, gold_prob, pad_id)


def fgm_perturbation(grad: Tensor, epsilon: float) -> Tensor:
    """``r = epsilon * g / ||g||_2`` with the norm over each row's all but first dimension.

    Args:
        grad: ``(B, T, d)`` gradient of the loss with respect to the input embeddings.
        epsilon: the norm of each row's perturbation.

    Returns:
        ``(B, T, d)``; a row whose gradient is zero gets no perturbation.
    """
    g = grad.detach().float()
    norms = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.dim() - 1)))  # (B, 1, 1)
    return (epsilon * g / norms.clamp(min=1e-12)).to(grad.dtype)


def raw_module(model: nn.Module) -> nn.Module:
    """The module under DDP's ``module`` and ``torch.compile``'s ``_orig_mod`` wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


LossFn = Callable[[Tensor], tuple[Tensor, Tensor]]  # decoder logits -> (mean loss, tokens)


def adversarial_loss(model: nn.Module, src: Tensor, tgt_in: Tensor, loss_fn: LossFn, epsilon: float) -> tuple[Tensor, Tensor]:
    """``(L(e) + L(e + r)) / 2`` with ``r`` from :func:`fgm_perturbation` on the decoder's input embeddings.

    The embeddings are the output of the model's ``tgt_embed`` module; a forward hook reads them
    in the clean pass and adds ``r`` (a constant) in the perturbed one.

    Returns:
        The mean loss over tokens and the token count, as the task's loss.
    """
    embed = raw_module(model).tgt_embed
    seen: list[Tensor] = []
    delta: list[Tensor] = []

    def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
        if delta:
            return out + delta[0]
        seen.append(out)
        return out

    handle = embed.register_forward_hook(hook)
    try:
        clean, n = loss_fn(model(src, tgt_in).logits)
        (grad,) = torch.autograd.grad(clean, seen[0], retain_graph=True)  # (B, T, d)
        delta.append(fgm_perturbation(grad, epsilon))
        adv, _ = loss_fn(model(src, tgt_in).logits)
    finally:
        handle.remove()
    return (clean + adv) / 2, n


def check_exposure(task: object, cfg: ExposureConfig) -> None:
    """Raise a :class:`ConfigError` when a remedy is asked of a task that was not built with it.

    An encoder-decoder task takes the settings when it is built (``Seq2SeqTask(exposure=...)``);
    a task without decoder inputs to change has no ``exposure`` attribute.
    """
    from attnkit.errors import ConfigError

    if cfg.kind != "none" and getattr(task, "exposure", None) != cfg:
        raise ConfigError(f"train.exposure.kind={cfg.kind} needs an encoder-decoder task built with it (train translate, reverse, "
                          "sort, copy); set train.exposure.kind=none")
