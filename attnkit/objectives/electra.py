"""ELECTRA's replaced-token detection (Clark et al. 2020, section 2, eq. 1-2).

A small masked-LM generator G fills the masked positions by *sampling* from its output
distribution, ``x_hat_i ~ p_G(x_i | x_masked)`` for ``i in m``; the discriminator D sees the
corrupted sequence and predicts for every token whether it is original or replaced. A sampled
token that equals the original counts as original ("if the generator happens to generate the
correct token, that token is considered real"). The two are trained together:

    min  L_MLM(x, theta_G) + lambda * L_Disc(x, theta_D),   lambda = 50

``L_MLM`` is the mean cross-entropy at the masked positions; ``L_Disc`` is the binary
cross-entropy of D's logit against "replaced", averaged over every non-padding token (the mean
``transformers.ElectraForPreTraining`` takes). No gradient flows through the sampling into G.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnkit.objectives.mlm import IGNORE

DISC_WEIGHT = 50.0  # lambda of eq. 2


@torch.no_grad()
def sample_replacements(gen_logits: Tensor, inputs: Tensor, labels: Tensor, *, positions: Tensor | None = None,
                        temperature: float = 1.0, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The discriminator's input: a token sampled from the generator at every masked position, the input elsewhere.

    Sampling is the Gumbel-max trick, ``argmax(logits / temperature - log(-log u))`` with ``u ~ U(0, 1)``,
    which draws from ``softmax(logits / temperature)``.

    Args:
        gen_logits: ``(B, T, V)`` the generator's logits, or ``(B, P, V)`` at ``positions`` only.
        inputs: ``(B, T)`` the masked input the generator read.
        labels: ``(B, T)`` the original token at masked positions, :data:`~attnkit.objectives.mlm.IGNORE` elsewhere;
            with ``positions``, ``(B, P)``: the original token at each of them, ``IGNORE`` in unused slots.
        positions: ``(B, P)`` where the logits were computed (:func:`~attnkit.objectives.mlm.prediction_slots`).
        temperature: of the sampling distribution.
        generator: for reproducible samples (on the logits' device).

    Returns:
        ``(corrupted (B, T), replaced (B, T) bool)``: ``replaced`` is True where the sample differs from the original.
    """
    masked = labels != IGNORE  # (B, T)
    u = torch.rand(gen_logits.shape, generator=generator, device=gen_logits.device).clamp_(1e-9, 1 - 1e-9)
    sampled = (gen_logits.float() / temperature - torch.log(-torch.log(u))).argmax(-1)  # (B, T) or (B, P)
    if positions is None:
        corrupted = torch.where(masked, sampled, inputs)
        original = torch.where(masked, labels, inputs)
        return corrupted, corrupted != original
    T = inputs.shape[1]
    slot = torch.where(masked, positions, torch.full_like(positions, T))  # unused slots write to a spare column
    spare = F.pad(inputs, (0, 1))  # (B, T + 1)
    corrupted = spare.scatter(1, slot, torch.where(masked, sampled, 0))[:, :T]
    original = spare.scatter(1, slot, torch.where(masked, labels, 0))[:, :T]
    return corrupted, corrupted != original


def discriminator_loss(logits: Tensor, replaced: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean binary cross-entropy of replaced-token detection over the non-padding tokens.

    Args:
        logits: ``(B, T)`` the discriminator's logits (positive: replaced).
        replaced: ``(B, T)`` bool or 0/1 labels.
        attention_mask: ``(B, T)`` 1 for real tokens.

    Returns:
        The scalar loss in float32.
    """
    real = attention_mask.to(torch.float32)  # a weight, not a boolean index: the shapes stay fixed and nothing is read on the host
    per_token = F.binary_cross_entropy_with_logits(logits.float(), replaced.float(), reduction="none")  # (B, T)
    return (per_token * real).sum() / real.sum().clamp(min=1.0)


def electra_loss(gen_logits: Tensor, labels: Tensor, disc_logits: Tensor, replaced: Tensor, attention_mask: Tensor,
                 disc_weight: float = DISC_WEIGHT) -> tuple[Tensor, Tensor, Tensor]:
    """ELECTRA's combined loss, eq. 2: the generator's masked-LM loss plus ``disc_weight`` times the discriminator's.

    Args:
        gen_logits: ``(B, T, V)``, or ``(B, P, V)`` at the masked positions alone.
        labels: ``(B, T)`` original tokens at masked positions, ``IGNORE`` elsewhere; or ``(B, P)`` matching ``gen_logits``.
        disc_logits: ``(B, T)``.
        replaced: ``(B, T)`` the discriminator's targets.
        attention_mask: ``(B, T)`` 1 for real tokens.
        disc_weight: lambda (50 in the paper).

    Returns:
        ``(total, generator loss, discriminator loss)``; the generator's term is 0 when nothing is masked.
    """
    n = (labels != IGNORE).sum()
    gen = F.cross_entropy(gen_logits.reshape(-1, gen_logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE,
                          reduction="sum") / n.clamp(min=1)  # a batch with no masked token: 0, not NaN
    disc = discriminator_loss(disc_logits, replaced, attention_mask)
    return gen + disc_weight * disc, gen, disc
