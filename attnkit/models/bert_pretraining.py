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
The encoder for fine-tuning is ``model.mlm.bert``; the masked-LM model alone is ``model.mlm``.
The losses are in :mod:`attnkit.training.mlm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.models.base import PretrainedModel, init_normal, register_model
from attnkit.models.bert import BertConfig, BertOutput
from attnkit.models.bert_heads import BertMLM


@dataclass(frozen=True, kw_only=True)
class BertPretrainingConfig(Config):
    """An encoder and the sentence-pair task trained beside masked LM."""

    encoder: BertConfig = field(default_factory=BertConfig)
    pair_task: Literal["none", "nsp", "sop", "sso"] = "nsp"

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

    @property
    def bert(self) -> nn.Module:
        """The encoder (what fine-tuning starts from)."""
        return self.mlm.bert

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
                positions: Tensor | None = None) -> PretrainingOutput:
        """``ids: (B, T)``; ``attention_mask`` 1 for real tokens; ``segment_ids`` 0 for A, 1 for B; ``positions: (B, P)``
        the rows the masked-LM head runs at (``mlm_logits`` ``(B, P, V)``; None: every row)."""
        out = self.mlm(ids, attention_mask=attention_mask, segment_ids=segment_ids, positions=positions)
        pair = self.pair(out.encoder.pooled) if self.pair is not None else None  # (B, 2)
        return PretrainingOutput(mlm_logits=out.logits, pair_logits=pair, encoder=out.encoder)
