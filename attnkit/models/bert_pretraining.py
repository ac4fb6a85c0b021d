"""BERT's pretraining model: the masked-LM head plus a sentence-pair classifier (Devlin et al. 2019, section 3.1).

:class:`BertPretraining` composes :class:`~attnkit.models.bert_heads.BertMLM` (dense -> GELU ->
LayerNorm -> decoder tied to the token embeddings) with a linear classifier on the pooled
[CLS] vector, which predicts

* next-sentence prediction (``pair_task="nsp"``, task #2: 0 = IsNext, 1 = NotNext, as the
  released code and Hugging Face number them), or
* sentence-order prediction (``pair_task="sop"``, ALBERT, Lan et al. 2020, section 4.1:
  0 = in order, 1 = swapped), or
* StructBERT's sentence structural objective (``pair_task="sso"``, Wang et al. 2020, section 2.2:
  0 = B follows A, 1 = B precedes A, 2 = B from another document), a three-way classifier.

With ``pair_task="none"`` there is no classifier (RoBERTa's recipe, Liu et al. 2019, section 4.2).
With ``span_boundary`` a :class:`SpanBoundaryHead` predicts each token of a masked span a second time from the
span's boundary tokens (SpanBERT's SBO, Joshi et al. 2020, section 3.2; :mod:`attnkit.objectives.span_boundary`)
through the same tied output layer.
The encoder for fine-tuning is ``model.mlm.bert``; the masked-LM model alone is ``model.mlm``.
The losses are in :mod:`attnkit.training.mlm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.models.base import PretrainedModel, init_normal, register_model
from attnkit.models.bert import BertConfig, BertOutput
from attnkit.models.bert_heads import BertMLM
from attnkit.objectives.span_boundary import MAX_OFFSET


class SpanBoundaryHead(nn.Module):
    """``y_i`` of eq. 1-2 from the encoder's states: ``(B, T, H)`` -> ``(B, P, E)`` at the given boundaries.

    Args:
        d_model: the encoder's width ``H``.
        d_out: the width of the output layer it feeds (the embedding width ``E``).
        max_offset: relative positions with their own embedding (longer spans share the last).
        eps: the LayerNorms' epsilon.
    """

    def __init__(self, d_model: int, d_out: int, max_offset: int = MAX_OFFSET, eps: float = 1e-12) -> None:
        super().__init__()
        self.max_offset = max_offset
        self.positions = nn.Embedding(max_offset, d_model)  # p_1 .. p_max
        self.w1 = nn.Linear(3 * d_model, d_model)
        self.norm1 = nn.LayerNorm(d_model, eps=eps)
        self.w2 = nn.Linear(d_model, d_out)
        self.norm2 = nn.LayerNorm(d_out, eps=eps)

    def forward(self, states: Tensor, left: Tensor, right: Tensor, offset: Tensor) -> Tensor:
        """``states: (B, T, H)``; ``left``, ``right``, ``offset``: ``(B, P)`` -> ``y: (B, P, E)``."""
        h = states.shape[-1]
        x_left = states.gather(1, left[..., None].expand(-1, -1, h))  # (B, P, H)
        x_right = states.gather(1, right[..., None].expand(-1, -1, h))
        p = self.positions(offset.clamp(max=self.max_offset - 1))  # (B, P, H)
        h1 = self.norm1(F.gelu(self.w1(torch.cat([x_left, x_right, p], dim=-1))))
        return self.norm2(F.gelu(self.w2(h1)))


@dataclass(frozen=True, kw_only=True)
class BertPretrainingConfig(Config):
    """An encoder and the sentence-pair task trained beside masked LM."""

    encoder: BertConfig = field(default_factory=BertConfig)
    pair_task: Literal["none", "nsp", "sop", "sso"] = "nsp"
    span_boundary: bool = False

    @property
    def pair_classes(self) -> int:
        """The sentence-pair classifier's classes: 3 for ``sso``, else 2 (0 without a pair task)."""
        return {"none": 0, "sso": 3}.get(self.pair_task, 2)

    def validate(self) -> None:
        check(self.pair_task == "none" or self.encoder.pooler, "pair_task", self.pair_task,
              "needs the pooled [CLS] vector; this encoder has pooler=false (use pair_task='none' or encoder.pooler=true)")


@dataclass
class PretrainingOutput:
    """What :class:`BertPretraining` returns."""

    mlm_logits: Tensor  # (B, T, V), or (B, P, V) at the positions asked for
    pair_logits: Tensor | None  # (B, 2), (B, 3) for sso; None for pair_task="none"
    encoder: BertOutput
    sbo_logits: Tensor | None = None  # (B, P, V) the span boundary objective's, at the boundaries asked for


@register_model("bert-pretraining")
class BertPretraining(PretrainedModel):
    """Masked LM (tied decoder) + NSP/SOP classifier on the pooled output."""

    config_class = BertPretrainingConfig

    def __init__(self, config: BertPretrainingConfig) -> None:
        super().__init__()
        self.config = config
        self.mlm = BertMLM(config.encoder)
        self.pair = nn.Linear(config.encoder.d_model, config.pair_classes) if config.pair_task != "none" else None
        if self.pair is not None:
            init_normal(self.pair, config.encoder.init_std)
        enc = config.encoder
        self.sbo = SpanBoundaryHead(enc.d_model, enc.embed_dim, eps=enc.norm_eps) if config.span_boundary else None
        if self.sbo is not None:
            init_normal(self.sbo, enc.init_std)

    @property
    def bert(self) -> nn.Module:
        """The encoder (what fine-tuning starts from)."""
        return self.mlm.bert

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
                positions: Tensor | None = None, boundaries: tuple[Tensor, Tensor, Tensor] | None = None) -> PretrainingOutput:
        """``ids: (B, T)``; ``attention_mask`` 1 for real tokens; ``segment_ids`` 0 for A, 1 for B; ``positions: (B, P)``
        the rows the masked-LM head runs at (``mlm_logits`` ``(B, P, V)``; None: every row); ``boundaries``: ``(left,
        right, offset)``, each ``(B, P)``, the span boundary objective's inputs (``sbo_logits`` ``(B, P, V)``)."""
        out = self.mlm(ids, attention_mask=attention_mask, segment_ids=segment_ids, positions=positions)
        pair = self.pair(out.encoder.pooled) if self.pair is not None else None  # (B, classes)
        sbo = None
        if boundaries is not None:
            if self.sbo is None:
                raise ValueError("boundaries: this model has no span boundary head (span_boundary=false)")
            sbo = self.mlm.decoder(self.sbo(out.encoder.last_hidden, *boundaries))  # (B, P, V)
        return PretrainingOutput(mlm_logits=out.logits, pair_logits=pair, encoder=out.encoder, sbo_logits=sbo)
