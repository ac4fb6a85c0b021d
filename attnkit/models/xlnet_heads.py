"""Fine-tuning heads on XLNet's content stream (Yang et al. 2019, section 3.3 and appendix A.3).

Fine-tuning runs XLNet without a factorisation order and without the query stream: the content
stream sees the whole (bidirectional) input, as BERT's encoder does, and a small head reads it.

* :class:`XLNetClassifier`: one label per sequence. A summary vector ``s`` of the last layer's
  states ``h`` goes through a dense layer and tanh, then dropout and the output layer:

      logits = W_o dropout(tanh(W_s s + b_s)) + b_o

  ``s`` is ``h`` at the first token (``"first"``: the [CLS] that attnkit's WordPiece data puts in
  front), at the last real token (``"last"``: XLNet's own layout, ``A <sep> B <sep> <cls>``) or
  the mean over the real tokens (``"mean"``).
* :class:`XLNetTagger`: one label per token, a linear layer on each state.

Both take ``forward(ids, attention_mask=, segment_ids=)`` as the BERT heads do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from attnkit.layers.pooling import mean_pool
from attnkit.models.base import PretrainedModel, init_normal, register_model
from attnkit.models.task import LabelledTaskConfig
from attnkit.models.xlnet import XLNetConfig, XLNetModel


@dataclass(frozen=True, kw_only=True)
class XLNetTaskConfig(LabelledTaskConfig):
    """An XLNet encoder plus the label set of a fine-tuning task.

    ``summary``: which state stands for the sequence (see the module docstring).
    ``classifier_dropout=None`` uses the encoder's dropout.
    """

    encoder: XLNetConfig = field(default_factory=XLNetConfig)
    summary: Literal["first", "last", "mean"] = "first"


@dataclass
class XLNetHeadOutput:
    """A head's logits and the encoder's last-layer states ``(B, T, d_model)``."""

    logits: Tensor  # classifier (B, num_labels); tagger (B, T, num_labels)
    hidden: Tensor


def last_real(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """``(B, d)``: each row's state at its last real token (padding on either side)."""
    T = hidden.shape[1]
    if attention_mask is None:
        return hidden[:, -1]
    last = T - 1 - attention_mask.flip(-1).long().argmax(-1)  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class _XLNetHead(PretrainedModel):
    config_class = XLNetTaskConfig
    config: XLNetTaskConfig

    def __init__(self, config: XLNetTaskConfig) -> None:
        super().__init__()
        self.config = config
        self.xlnet = XLNetModel(config.encoder)

    def encode(self, ids: Tensor, attention_mask: Tensor | None, segment_ids: Tensor | None) -> Tensor:
        return self.xlnet(ids, attention_mask=attention_mask, segment_ids=segment_ids)  # (B, T, d): the content stream


@register_model("xlnet-classifier")
class XLNetClassifier(_XLNetHead):
    """Sequence (or sentence-pair) classification from a summary state, dense -> tanh -> output."""

    def __init__(self, config: XLNetTaskConfig) -> None:
        super().__init__(config)
        d = config.encoder.d_model
        self.summary = nn.Linear(d, d)
        self.drop = nn.Dropout(config.head_dropout)
        self.out = nn.Linear(d, config.num_labels)
        init_normal(self, config.encoder.init_std, skip=("xlnet",))

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None) -> XLNetHeadOutput:
        h = self.encode(ids, attention_mask, segment_ids)
        kind = self.config.summary
        s = h[:, 0] if kind == "first" else last_real(h, attention_mask) if kind == "last" else mean_pool(h, attention_mask)
        return XLNetHeadOutput(logits=self.out(self.drop(torch.tanh(self.summary(s)))), hidden=h)  # (B, num_labels)


@register_model("xlnet-tagger")
class XLNetTagger(_XLNetHead):
    """Token classification (NER): a linear layer on every state of the content stream."""

    def __init__(self, config: XLNetTaskConfig) -> None:
        super().__init__(config)
        self.out = nn.Linear(config.encoder.d_model, config.num_labels)
        init_normal(self, config.encoder.init_std, skip=("xlnet",))

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None) -> XLNetHeadOutput:
        h = self.encode(ids, attention_mask, segment_ids)
        return XLNetHeadOutput(logits=self.out(h), hidden=h)  # (B, T, num_labels)
