"""Feature-based use of a frozen encoder: its layers' states feed a small task model (Devlin et al. 2019, section 5.3; ELMo).

The BERT paper's alternative to fine-tuning (section 5.3, table 7) keeps the pretrained encoder
fixed and feeds its activations to a task model: for NER, a two-layer bidirectional LSTM of 768
units per direction before the classifier, on

* ``last``: the last layer's states;
* ``last4``: the concatenation of the last four layers' states (the paper's best, 4H wide);
* ``weighted``: ELMo's learned combination (Peters et al. 2018, eq. 1),
  ``gamma * sum_j s_j h_j`` over every layer j (the embeddings output and each Transformer
  layer) with ``s = softmax(w)``, ``w`` and ``gamma`` trained with the task model.

The encoder gets no gradient and stays in evaluation mode (no dropout), so its features are
those of the pretrained model. Tagging runs the BiLSTM over the tokens and a linear layer on its
outputs (``task="ner"``); classification (``task="classify"``) mean-pools the features over the
real tokens and applies a linear layer, or runs the BiLSTM first with ``lstm_hidden > 0``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.layers.pooling import mean_pool
from attnkit.models.base import PretrainedModel, init_normal, register_model
from attnkit.models.bert import BertConfig, BertModel
from attnkit.models.bert_heads import HeadOutput

Features = Literal["last", "last4", "weighted"]


@dataclass(frozen=True, kw_only=True)
class FeatureConfig(Config):
    """A frozen encoder, which of its layers to read, and the task model on top.

    ``lstm_hidden``: units per direction of the two-layer BiLSTM (0: none; the linear layer
    reads the features directly). ``dropout``: on the features and on the LSTM's outputs.
    """

    encoder: BertConfig = field(default_factory=BertConfig)
    task: Literal["classify", "ner"] = "classify"
    features: Features = "last4"
    num_labels: int = 2
    labels: tuple[str, ...] = ()
    lstm_hidden: int = 0
    dropout: float = 0.1

    def validate(self) -> None:
        check(self.num_labels > 0, "num_labels", self.num_labels, "must be positive")
        check(not self.labels or len(self.labels) == self.num_labels, "labels", self.labels, f"must name num_labels={self.num_labels} labels")
        check(self.lstm_hidden >= 0, "lstm_hidden", self.lstm_hidden, "must be >= 0 (0: no LSTM)")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        check(self.features != "last4" or self.encoder.n_layers >= 4, "features", self.features,
              f"needs at least 4 layers; the encoder has {self.encoder.n_layers}")

    @property
    def feature_dim(self) -> int:
        return self.encoder.d_model * (4 if self.features == "last4" else 1)


class ScalarMix(nn.Module):
    """ELMo's task-specific combination of layers (Peters et al. 2018, eq. 1): ``gamma * sum_j softmax(w)_j h_j``."""

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(n_layers))  # s = softmax(w): uniform at the start
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, states: list[Tensor]) -> Tensor:
        s = torch.softmax(self.w, dim=0)  # (L,)
        return self.gamma * torch.einsum("l,lbtd->btd", s, torch.stack(states))  # (B, T, d)


@register_model("bert-features")
class FeatureModel(PretrainedModel):
    """A frozen BERT-family encoder read as features by a small classifier or tagger."""

    config_class = FeatureConfig

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = c = config
        self.bert = BertModel(c.encoder)
        self.bert.requires_grad_(False)
        self.mix = ScalarMix(c.encoder.n_layers + 1) if c.features == "weighted" else None
        self.drop = nn.Dropout(c.dropout)
        self.lstm = nn.LSTM(c.feature_dim, c.lstm_hidden, num_layers=2, bidirectional=True, batch_first=True) if c.lstm_hidden else None
        self.out = nn.Linear(2 * c.lstm_hidden if c.lstm_hidden else c.feature_dim, c.num_labels)
        init_normal(self.out, c.encoder.init_std)

    def train(self, mode: bool = True) -> "FeatureModel":
        super().train(mode)
        self.bert.eval()  # the encoder's features are the pretrained model's: no dropout
        return self

    def features(self, ids: Tensor, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None) -> Tensor:
        """``(B, T, F)``: the chosen layers' states (``F = 4H`` for ``last4``, else ``H``), the encoder without gradients."""
        with torch.no_grad():
            states = self.bert(ids, attention_mask=attention_mask, segment_ids=segment_ids, output_hidden_states=True).hidden_states
        assert states is not None
        if self.config.features == "last":
            return states[-1]  # (B, T, H)
        if self.config.features == "last4":
            return torch.cat(states[-4:], dim=-1)  # (B, T, 4H)
        assert self.mix is not None
        return self.mix(states)  # (B, T, H)

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None) -> HeadOutput:
        x = self.drop(self.features(ids, attention_mask, segment_ids))  # (B, T, F)
        if self.lstm is not None:
            lengths = attention_mask.sum(1).cpu() if attention_mask is not None else torch.full((ids.shape[0],), ids.shape[1])
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x = nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=ids.shape[1])[0]  # (B, T, 2h)
            x = self.drop(x)
        if self.config.task == "classify":
            x = mean_pool(x, attention_mask)  # (B, F)
        return HeadOutput(logits=self.out(x), encoder=None)  # type: ignore[arg-type]  # (B, C) or (B, T, C)


def feature_model(source: nn.Module, task: str, labels: list[str], features: str, *, lstm_hidden: int | None = None,
                  dropout: float = 0.1) -> FeatureModel:
    """A :class:`FeatureModel` on ``source``'s encoder weights; ``lstm_hidden=None`` takes the BERT paper's
    choice: a BiLSTM for tagging (the encoder's width per direction), none for classification."""
    enc = source if isinstance(source, BertModel) else getattr(source, "bert", None)
    if not isinstance(enc, BertModel):
        from attnkit.errors import CheckpointError

        raise CheckpointError(f"the model is a {type(source).__name__}, not a BERT-family encoder or head; features need one")
    hidden = (enc.config.d_model if task == "ner" else 0) if lstm_hidden is None else lstm_hidden
    cfg = FeatureConfig(encoder=enc.config, task=task, features=features, num_labels=len(labels), labels=tuple(labels),  # type: ignore[arg-type]
                        lstm_hidden=hidden, dropout=dropout)
    model = FeatureModel(cfg)
    model.bert.load_state_dict(enc.state_dict())
    return model


__all__ = ["FeatureConfig", "FeatureModel", "ScalarMix", "feature_model"]
