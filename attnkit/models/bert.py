"""BERT: a bidirectional Transformer encoder (Devlin et al. 2019) and its relatives as configuration.

The input representation (section 3, figure 2) is the sum of token, segment and learned
position embeddings, followed by LayerNorm and dropout. The body is the encoder of
Vaswani et al. 2017 with post-norm residuals and the exact (erf) GELU; the pooler maps the
final state of the first token ([CLS]) through a dense layer and tanh (section 3.1,
"C"; the pooler is the one of the released code).

Relatives are options of the same stack, not separate classes:

* RoBERTa (Liu et al. 2019): ``positions="after_pad"`` (position ids count the non-padding
  tokens and start after ``pad_id``, so the table has ``max_positions = 512 + pad_id + 1``
  rows), a single segment (``type_vocab_size=1``), LayerNorm eps 1e-5.
* ALBERT (Lan et al. 2020, section 3.1): factorised embeddings (``d_embed`` = E < H, then a
  projection E -> H) and cross-layer parameter sharing (``share_layers``: one layer's
  weights applied ``n_layers`` times).
* ELECTRA (Clark et al. 2020): the discriminator is a BERT encoder with factorised
  embeddings when E < H and no pooler; its head is in :mod:`attnkit.models.bert_heads`.

Task heads (masked LM, classification, tagging, extractive QA, replaced-token detection)
live in :mod:`attnkit.models.bert_heads`; Hugging Face key maps in :mod:`attnkit.hub.bert`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnkit.config import Config, check, pick_preset
from attnkit.errors import DataError
from attnkit.layers.blocks import EncoderLayer, LayerSpec
from attnkit.layers.moe import MoEConfig
from attnkit.layers.positional import LearnedPositions, check_ids
from attnkit.models.base import MAX_LAYERS, PretrainedModel, init_normal, register_model
from attnkit.models.transformer import AttentionConfig

Activation = Literal["relu", "gelu", "gelu_tanh", "gelu_sigmoid"]


@dataclass(frozen=True, kw_only=True)
class BertConfig(Config):
    """Sizes and choices of a BERT-family encoder (defaults: BERT-base uncased, 110M parameters).

    ``d_ff=None`` means 4 * d_model; ``d_embed=None`` means embeddings of width d_model with
    no projection (set it, even equal to d_model, for ALBERT's projection). ``dropout`` is
    BERT's ``hidden_dropout_prob`` (embeddings and every residual branch);
    ``attention.dropout`` its ``attention_probs_dropout_prob``.
    """

    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2
    d_model: int = 768
    n_heads: int = 12
    n_layers: int = 12
    d_ff: int | None = None
    d_embed: int | None = None
    share_layers: bool = False
    dropout: float = 0.1
    activation: Activation = "gelu"
    norm_eps: float = 1e-12
    attention: AttentionConfig = field(default_factory=lambda: AttentionConfig(dropout=0.1))
    positions: Literal["absolute", "after_pad"] = "absolute"
    pad_id: int = 0
    pooler: bool = True
    init_std: float = 0.02
    ffn: Literal["mlp", "switch"] = "mlp"
    moe: MoEConfig = field(default_factory=MoEConfig)  # ffn="switch": the Switch layer (attnkit.layers.moe)

    def validate(self) -> None:
        for name in ("vocab_size", "max_positions", "type_vocab_size", "d_model", "n_heads", "n_layers"):
            check(getattr(self, name) > 0, name, getattr(self, name), "must be positive")
        check(self.n_layers <= MAX_LAYERS, "n_layers", self.n_layers, f"must be at most {MAX_LAYERS}")
        for name in ("d_ff", "d_embed"):
            check(getattr(self, name) is None or getattr(self, name) > 0, name, getattr(self, name), "must be positive or null")
        check(self.d_model % self.n_heads == 0, "n_heads", self.n_heads, f"must divide d_model={self.d_model}")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        check(self.norm_eps > 0, "norm_eps", self.norm_eps, "must be positive")
        check(0 <= self.pad_id < self.vocab_size, "pad_id", self.pad_id, f"must be a token id below vocab_size={self.vocab_size}")
        if self.positions == "after_pad":
            check(self.pad_id + 2 <= self.max_positions, "max_positions", self.max_positions, f"must exceed pad_id + 1 = {self.pad_id + 1}")
        check(self.init_std > 0, "init_std", self.init_std, "must be positive")

    @property
    def ffn_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def embed_dim(self) -> int:
        return self.d_embed if self.d_embed is not None else self.d_model

    @property
    def max_len(self) -> int:
        """The longest input the position table allows."""
        return self.max_positions - (self.pad_id + 1 if self.positions == "after_pad" else 0)

    def layer_spec(self) -> LayerSpec:
        return LayerSpec.from_config(self, d_ff=self.ffn_dim, norm_position="post")


def _bert(n_layers: int, d_model: int, **kw: Any) -> BertConfig:
    """Devlin et al. 2019 sizes: A = H / 64 heads, d_ff = 4H."""
    return BertConfig(n_layers=n_layers, d_model=d_model, n_heads=d_model // 64, **kw)


BERT_PRESETS: dict[str, BertConfig] = {
    # Devlin et al. 2019, section 3: BERT-base (110M) and BERT-large (340M).
    "bert-base": _bert(12, 768),
    "bert-large": _bert(24, 1024),
    # Turc et al. 2019, "Well-Read Students Learn Better" (the 24 compact BERTs): L/H.
    "bert-tiny": _bert(2, 128),
    "bert-mini": _bert(4, 256),
    "bert-small": _bert(4, 512),
    "bert-medium": _bert(8, 512),
    # Relatives (their released base configurations).
    "roberta-base": BertConfig(
        vocab_size=50265, max_positions=514, type_vocab_size=1, pad_id=1, positions="after_pad", norm_eps=1e-5
    ),
    "albert-base-v2": BertConfig(
        vocab_size=30000, d_embed=128, share_layers=True, activation="gelu_tanh", dropout=0.0,
        attention=AttentionConfig(dropout=0.0),
    ),
    "electra-small-discriminator": BertConfig(d_model=256, n_heads=4, d_ff=1024, d_embed=128, pooler=False),
    # For tests and CPU experiments.
    "bert-test": BertConfig(vocab_size=99, max_positions=64, d_model=32, n_heads=4, n_layers=2, d_ff=37),
}


def bert_preset(name: str, **overrides: Any) -> BertConfig:
    """Exact-name BERT-family preset lookup, optionally with field overrides."""
    return pick_preset(BERT_PRESETS, name, "BERT", **overrides)


@dataclass
class BertOutput:
    """What :class:`BertModel` returns."""

    last_hidden: Tensor  # (B, T, d_model)
    pooled: Tensor | None  # (B, d_model): tanh(W h_[CLS] + b); None without a pooler
    hidden_states: list[Tensor] | None = None  # embeddings output, then each layer's: n_layers + 1 of (B, T, d_model)
    attentions: list[Tensor] | None = None  # with need_weights: each layer's (B, H, T, T) attention weights


class BertEmbeddings(nn.Module):
    """E_token + E_segment + E_position -> LayerNorm -> dropout (-> Linear E -> H when factorised)."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.config = c
        self.tokens = nn.Embedding(c.vocab_size, c.embed_dim)
        self.segments = nn.Embedding(c.type_vocab_size, c.embed_dim)
        self.positions = LearnedPositions(c.embed_dim, c.max_positions)
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.drop = nn.Dropout(c.dropout)
        self.project = nn.Linear(c.embed_dim, c.d_model) if c.d_embed is not None else None

    def position_ids(self, ids: Tensor) -> Tensor:
        """``(B, T)`` position ids; RoBERTa's count real tokens only, starting at ``pad_id + 1``."""
        c = self.config
        if c.positions == "after_pad":
            real = (ids != c.pad_id).long()  # (B, T)
            return torch.cumsum(real, dim=1) * real + c.pad_id  # padding keeps position pad_id
        return torch.arange(ids.shape[1], device=ids.device).expand_as(ids)  # (B, T)

    def forward(self, ids: Tensor, segment_ids: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        # Defaults are rows of the tables broadcast over the batch: the same sums as looking up
        # zeros and 0..T-1 per row, without (B, T) gathers and their scatter-add backward.
        if positions is not None or self.config.positions == "after_pad":
            pos = self.positions.embedding(positions if positions is not None else self.position_ids(ids))  # (B, T, E)
        else:
            pos = self.positions.embedding.weight[: ids.shape[1]]  # (T, E)
        check_ids(ids, self.config.vocab_size, "input_ids")
        if segment_ids is not None:
            check_ids(segment_ids, self.config.type_vocab_size, "segment_ids")
        seg = self.segments(segment_ids) if segment_ids is not None else self.segments.weight[0]  # (B, T, E) or (E,)
        if self.config.attention.position.kind != "none":
            pos = 0  # relative positions live in the attention (BERT's relative_key): nothing added here
        x = self.tokens(ids) + seg + pos  # (B, T, E)
        x = self.drop(self.norm(x))
        return self.project(x) if self.project is not None else x  # (B, T, d_model)


@register_model("bert")
class BertModel(PretrainedModel):
    """The BERT-family encoder; ``forward(ids)`` returns the final hidden states and the pooled [CLS] vector."""

    config_class = BertConfig

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = BertEmbeddings(c)
        spec = c.layer_spec()
        if c.share_layers:  # ALBERT: the same module (and weights) at every depth
            shared = EncoderLayer(spec)
            self.layers = nn.ModuleList([shared] * c.n_layers)
        else:
            self.layers = nn.ModuleList(EncoderLayer(spec) for _ in range(c.n_layers))
        self.pooler = nn.Linear(c.d_model, c.d_model) if c.pooler else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """BERT initialisation: N(0, init_std) matrices and embeddings, zero biases, unit LayerNorms."""
        init_normal(self, self.config.init_std)

    def forward(
        self,
        ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        segment_ids: Tensor | None = None,
        positions: Tensor | None = None,
        output_hidden_states: bool = False,
        need_weights: bool = False,
    ) -> BertOutput:
        """Encode ``ids: (B, T)``.

        Args:
            attention_mask: ``(B, T)``, 1/True for real tokens, 0 for padding (keys that no
                query attends to; the padded positions still get outputs, which are to be ignored).
            segment_ids: ``(B, T)`` token type ids (0 for sentence A, 1 for B); default all 0.
            positions: ``(B, T)`` position ids; default 0..T-1 (RoBERTa: counted after ``pad_id``).
            output_hidden_states: also return the embeddings output and every layer's output.
            need_weights: also return every layer's attention weights (the kernels' reference path).
        """
        if ids.shape[1] > self.config.max_len:
            raise DataError(
                f"sequence of {ids.shape[1]} tokens is longer than the model's {self.config.max_len} positions; truncate the input"
            )
        mask = attention_mask.bool()[:, None, None, :] if attention_mask is not None else None  # (B, 1, 1, T)
        x = self.embed(ids, segment_ids, positions)  # (B, T, d_model)
        states = [x] if output_hidden_states else None
        weights = []
        for layer in self.layers:
            x, w = layer(x, mask, need_weights=need_weights)  # (B, T, d_model)
            weights.append(w)
            if states is not None:
                states.append(x)
        pooled = torch.tanh(self.pooler(x[:, 0])) if self.pooler is not None else None  # (B, d_model)
        return BertOutput(last_hidden=x, pooled=pooled, hidden_states=states, attentions=weights if need_weights else None)


def unshare_layers(model: BertModel) -> BertModel:
    """ALBERT's one shared layer (Lan et al. 2020, section 3.1, cross-layer parameter sharing) copied
    into ``n_layers`` independent layers: the same function until the first update, after which
    each depth trains its own weights (the un-shared fine-tuning of ALBERT checkpoints).

    Args:
        model: an encoder with ``share_layers=True`` (one without is returned as is).

    Returns:
        A new :class:`BertModel` with ``share_layers=False``, in the same training mode, device and dtype.
    """
    if not model.config.share_layers:
        return model
    p = next(model.parameters())
    unshared = BertModel(model.config.replace(share_layers=False))
    # the shared model's state holds the one layer's tensors under every depth's keys (layers.0 ... layers.N-1)
    unshared.load_state_dict(model.state_dict())
    return unshared.to(device=p.device, dtype=p.dtype).train(model.training)
