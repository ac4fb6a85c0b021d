"""ELECTRA's pretraining model: a small masked-LM generator and the discriminator, sharing embeddings (Clark et al. 2020).

The discriminator is :class:`~attnkit.models.bert_heads.ElectraDiscriminator` (a BERT encoder and
a per-token replaced/original logit); the generator a :class:`~attnkit.models.bert_heads.BertMLM`
of the same depth at ``generator_fraction`` of the width (section 3.2: "models work best with
generators 1/4-1/2 the size of the discriminator"; ELECTRA-Small's is 1/4). As in the released
code, its hidden size, feed-forward size and number of heads are the discriminator's times the
fraction (at least one head). Weight sharing (section 3.1): the token, position and segment
embeddings and their LayerNorm are one module used by both, and the generator's output layer is
tied to the token embeddings; a generator narrower than the embeddings projects them to its width.

``forward`` runs the generator on the masked input, samples its replacements
(:func:`attnkit.objectives.electra.sample_replacements`) and runs the discriminator on the
result; the loss is :func:`attnkit.objectives.electra.electra_loss`. Fine-tuning and export use
the discriminator alone (``model.discriminator``; ``model.bert`` is its encoder).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.models.base import PretrainedModel, register_model
from attnkit.models.bert import BertConfig, BertModel, bert_preset
from attnkit.models.bert_heads import BertMLM, ElectraDiscriminator
from attnkit.objectives.electra import sample_replacements
from attnkit.objectives.mlm import IGNORE


@dataclass(frozen=True, kw_only=True)
class ElectraPretrainingConfig(Config):
    """The discriminator and the generator's share of its width (defaults: ELECTRA-Small, generator 1/4)."""

    discriminator: BertConfig = field(default_factory=lambda: bert_preset("electra-small-discriminator"))
    generator_fraction: float = 0.25

    def validate(self) -> None:
        check(0.0 < self.generator_fraction <= 1.0, "generator_fraction", self.generator_fraction, "must be in (0, 1]")
        check(not self.discriminator.share_layers, "discriminator.share_layers", True, "ELECTRA does not share layers")
        g = self.generator
        check(g.d_model % g.n_heads == 0, "generator_fraction", self.generator_fraction,
              f"gives a generator of width {g.d_model} that {g.n_heads} heads do not divide")

    @property
    def vocab_size(self) -> int:
        return self.discriminator.vocab_size

    @property
    def generator(self) -> BertConfig:
        """The generator's config: the discriminator's at ``generator_fraction`` of its width, heads and feed-forward size."""
        d, f = self.discriminator, self.generator_fraction
        return d.replace(d_model=max(1, round(d.d_model * f)), n_heads=max(1, round(d.n_heads * f)),
                         d_ff=max(1, round(d.ffn_dim * f)), d_embed=d.embed_dim, pooler=False)


@dataclass
class ElectraOutput:
    """What :class:`ElectraPretraining` returns."""

    gen_logits: Tensor  # (B, T, V) the generator's masked-LM logits, or (B, P, V) at the positions asked for
    disc_logits: Tensor  # (B, T) replaced-token logits
    corrupted: Tensor  # (B, T) the discriminator's input
    replaced: Tensor  # (B, T) bool: the discriminator's targets


@register_model("electra-pretraining")
class ElectraPretraining(PretrainedModel):
    """Generator + discriminator with shared embeddings; ``forward(masked ids, labels=...)``."""

    config_class = ElectraPretrainingConfig

    def __init__(self, config: ElectraPretrainingConfig) -> None:
        super().__init__()
        self.config = config
        self.discriminator = ElectraDiscriminator(config.discriminator)
        self.generator = BertMLM(config.generator)
        shared, own = self.discriminator.bert.embed, self.generator.bert.embed
        own.tokens, own.segments, own.positions, own.norm = shared.tokens, shared.segments, shared.positions, shared.norm
        self.generator.decoder.weight = shared.tokens.weight

    def init_replaced_prior(self, replaced: float) -> None:
        """Set the discriminator's output bias to the log-odds of ``replaced``, the share of tokens the generator replaces.

        Only a small share of tokens is replaced (about the masking rate, 15%, while the generator is
        untrained), so the first thing replaced-token detection learns is that prior, ``log(p / (1 - p))``
        (about -1.7) at every token. From a zero bias, which Adam moves by about the learning rate per
        step, the fastest way to that constant is to make every position's state the same: the
        discriminator's stack collapses to one vector, whose per-token gradients then vanish, and it
        stays at "original" everywhere. Starting the bias at the prior (the prior initialisation of Lin
        et al. 2017, "Focal Loss for Dense Object Detection", section 4.1) leaves the encoder nothing
        constant to learn. A deviation from ELECTRA's released code, which starts the bias at zero.

        Args:
            replaced: the expected share of replaced tokens, in (0, 1).
        """
        check(0.0 < replaced < 1.0, "replaced", replaced, "must be in (0, 1)")
        with torch.no_grad():
            self.discriminator.out.bias.fill_(math.log(replaced / (1.0 - replaced)))

    @property
    def bert(self) -> BertModel:
        """The discriminator's encoder (what fine-tuning starts from)."""
        return self.discriminator.bert

    def forward(self, ids: Tensor, *, labels: Tensor | None = None, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
                positions: Tensor | None = None, temperature: float = 1.0, generator: torch.Generator | None = None) -> ElectraOutput:
        """``ids: (B, T)`` the masked input; ``labels`` the original tokens at masked positions (``IGNORE`` elsewhere).

        Args:
            ids: the masked input.
            labels: the generator's targets (None: nothing masked, the discriminator reads ``ids``); ``(B, T)``, or
                ``(B, P)`` at ``positions``.
            positions: ``(B, P)`` the masked positions (:func:`~attnkit.objectives.mlm.prediction_slots`): the
                generator's output layer and the sampling run there alone (None: at every position).
            attention_mask: 1 for real tokens.
            segment_ids: 0 for sentence A, 1 for B.
            temperature: of the generator's sampling.
            generator: random source of the sampling.
        """
        if labels is None:
            labels = torch.full_like(ids, IGNORE)
        gen = self.generator(ids, attention_mask=attention_mask, segment_ids=segment_ids, positions=positions).logits  # (B, T or P, V)
        corrupted, replaced = sample_replacements(gen, ids, labels, positions=positions, temperature=temperature, generator=generator)
        disc = self.discriminator(corrupted, attention_mask=attention_mask, segment_ids=segment_ids).logits  # (B, T)
        if attention_mask is not None:
            replaced = replaced & attention_mask.bool()
        return ElectraOutput(gen_logits=gen, disc_logits=disc, corrupted=corrupted, replaced=replaced)
