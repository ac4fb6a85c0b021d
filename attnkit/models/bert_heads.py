"""Task heads on the BERT-family encoder, one small class per task (Devlin et al. 2019, section 3 and figure 4).

* :class:`BertMLM`: masked-LM logits through dense -> activation -> LayerNorm -> a decoder
  tied to the token embeddings, plus a per-token output bias (section 3.1, task #1).
* :class:`BertClassifier`: one label per sequence (or sentence pair) from the [CLS] state
  (figure 4 (a), (b)).
* :class:`BertTagger`: one label per token (figure 4 (d), NER).
* :class:`BertQA`: start and end logits over the tokens (figure 4 (c), SQuAD).
* :class:`ElectraDiscriminator`: replaced-token detection, one logit per token (Clark et al. 2020, section 2).

Heads return logits only; losses live in :mod:`attnkit.objectives`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from attnkit.errors import ConfigError
from attnkit.layers.ffn import activation
from attnkit.layers.pooling import mean_pool
from attnkit.models.base import PretrainedModel, init_normal, register_model
from attnkit.models.bert import BertConfig, BertModel, BertOutput
from attnkit.models.task import LabelledTaskConfig


@dataclass(frozen=True, kw_only=True)
class BertTaskConfig(LabelledTaskConfig):
    """An encoder plus the label set of a fine-tuning task.

    ``classifier`` picks how a sequence becomes one vector: ``"pooler"`` (BERT, ALBERT: the
    pooled [CLS]), ``"cls_tanh"`` (RoBERTa: dense -> tanh on the first token, without the
    pooler), ``"cls_gelu"`` (ELECTRA: dense -> GELU on the first token) or ``"mean"`` (the
    mean of the non-padding states, the sentence embedding of Reimers & Gurevych 2019,
    section 3, that sentence-transformers checkpoints such as all-MiniLM-L6-v2 were trained
    with; a linear layer on it, no dense layer). ``classifier_dropout=None`` uses the encoder's dropout.
    """

    encoder: BertConfig = field(default_factory=BertConfig)
    classifier: Literal["pooler", "cls_tanh", "cls_gelu", "mean"] = "pooler"


@dataclass
class HeadOutput:
    """What a head returns: its logits and the encoder's output."""

    logits: Tensor  # MLM (B, T, V); classifier (B, num_labels); tagger (B, T, num_labels); QA (B, T, 2); RTD (B, T)
    encoder: BertOutput

    @property
    def start_logits(self) -> Tensor:
        """QA: ``(B, T)`` scores of each token starting the answer."""
        return self.logits[..., 0]

    @property
    def end_logits(self) -> Tensor:
        """QA: ``(B, T)`` scores of each token ending the answer."""
        return self.logits[..., 1]


class _Head(PretrainedModel):
    """Shared plumbing: ``self.bert`` is the encoder; ``forward`` passes the inputs through."""

    bert: BertModel

    def encode(self, ids: Tensor, attention_mask: Tensor | None, segment_ids: Tensor | None, output_hidden_states: bool) -> BertOutput:
        return self.bert(ids, attention_mask=attention_mask, segment_ids=segment_ids, output_hidden_states=output_hidden_states)


@register_model("bert-mlm")
class BertMLM(_Head):
    """Masked-LM head: logits over the vocabulary at every position, decoder tied to the token embeddings."""

    config_class = BertConfig

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = c = config
        self.bert = BertModel(c)
        self.transform = nn.Linear(c.d_model, c.embed_dim)  # H -> E (E = H unless factorised)
        self.act = activation(c.activation)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.decoder = nn.Linear(c.embed_dim, c.vocab_size)
        init_normal(self, c.init_std)
        self.decoder.weight = self.bert.embed.tokens.weight
        nn.init.zeros_(self.decoder.bias)

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
                output_hidden_states: bool = False, positions: Tensor | None = None) -> HeadOutput:
        """Logits ``(B, T, V)``, or ``(B, P, V)`` at ``positions: (B, P)`` only.

        With ``positions`` the head (transform, LayerNorm, decoder) runs on those rows of the encoder's output
        alone: the same numbers as the full output there, without the ``T x V`` product elsewhere (a cloze
        reads one mask, an answer a few)."""
        out = self.encode(ids, attention_mask, segment_ids, output_hidden_states)
        h = out.last_hidden  # (B, T, H)
        if positions is not None:
            h = h.gather(1, positions[..., None].expand(-1, -1, h.shape[-1]))  # (B, P, H)
        h = self.norm(self.act(self.transform(h)))  # (B, T or P, E)
        return HeadOutput(logits=self.decoder(h), encoder=out)  # (B, T or P, V)


class _TaskHead(_Head):
    config_class = BertTaskConfig
    config: BertTaskConfig

    def __init__(self, config: BertTaskConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = BertModel(config.encoder)
        self.drop = nn.Dropout(config.head_dropout)


@register_model("bert-classifier")
class BertClassifier(_TaskHead):
    """Sequence (or sentence-pair) classification from the first token's state or the mean state."""

    def __init__(self, config: BertTaskConfig) -> None:
        super().__init__(config)
        h = config.encoder.d_model
        if config.classifier == "pooler" and not config.encoder.pooler:
            raise ConfigError("classifier='pooler' is not allowed with encoder.pooler=false; choose 'cls_tanh' or 'cls_gelu'")
        self.dense = nn.Linear(h, h) if config.classifier in ("cls_tanh", "cls_gelu") else None
        self.out = nn.Linear(h, config.num_labels)
        init_normal(self, config.encoder.init_std)

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
                output_hidden_states: bool = False) -> HeadOutput:
        out = self.encode(ids, attention_mask, segment_ids, output_hidden_states)
        if self.config.classifier == "pooler":
            x = out.pooled  # (B, H)
        elif self.config.classifier == "mean":
            x = mean_pool(out.last_hidden, attention_mask)  # (B, H)
        else:
            act = torch.tanh if self.config.classifier == "cls_tanh" else activation("gelu")
            x = act(self.dense(self.drop(out.last_hidden[:, 0])))  # (B, H)
        return HeadOutput(logits=self.out(self.drop(x)), encoder=out)  # (B, num_labels)


@register_model("bert-tagger")
class BertTagger(_TaskHead):
    """Token classification (NER): a linear layer on every final hidden state."""

    def __init__(self, config: BertTaskConfig) -> None:
        super().__init__(config)
        self.out = nn.Linear(config.encoder.d_model, config.num_labels)
        init_normal(self, config.encoder.init_std)

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
                output_hidden_states: bool = False) -> HeadOutput:
        out = self.encode(ids, attention_mask, segment_ids, output_hidden_states)
        return HeadOutput(logits=self.out(self.drop(out.last_hidden)), encoder=out)  # (B, T, num_labels)


@register_model("bert-qa")
class BertQA(_TaskHead):
    """Extractive QA: a start vector S and an end vector E dotted with every token (section 4.2); ``num_labels`` must be 2."""

    def __init__(self, config: BertTaskConfig) -> None:
        if config.num_labels != 2:
            raise ConfigError(f"num_labels={config.num_labels} is not allowed; extractive QA has 2 outputs (start, end)")
        super().__init__(config)
        self.out = nn.Linear(config.encoder.d_model, 2)
        init_normal(self, config.encoder.init_std)

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
                output_hidden_states: bool = False) -> HeadOutput:
        out = self.encode(ids, attention_mask, segment_ids, output_hidden_states)
        return HeadOutput(logits=self.out(out.last_hidden), encoder=out)  # (B, T, 2): start, end


@register_model("electra-discriminator")
class ElectraDiscriminator(_Head):
    """Replaced-token detection: dense -> activation -> one logit per token (positive = replaced)."""

    config_class = BertConfig

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = c = config
        self.bert = BertModel(c)
        self.dense = nn.Linear(c.d_model, c.d_model)
        self.act = activation(c.activation)
        self.out = nn.Linear(c.d_model, 1)
        init_normal(self, c.init_std)

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
                output_hidden_states: bool = False) -> HeadOutput:
        out = self.encode(ids, attention_mask, segment_ids, output_hidden_states)
        return HeadOutput(logits=self.out(self.act(self.dense(out.last_hidden))).squeeze(-1), encoder=out)  # (B, T)
