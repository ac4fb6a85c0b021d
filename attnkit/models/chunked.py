"""Classification of documents longer than the encoder's positions, by chunks.

A document's tokens are cut into chunks of ``chunk_len`` tokens, each read as ``[CLS] chunk [SEP]``
by the same BERT-family classifier. Four ways to turn the chunks into one prediction:

* ``truncate``: the first chunk only (what a position limit does to a long document);
* ``average``: the mean of the chunks' logits (each chunk classified alone);
* ``memory``: memory tokens in the style of the Recurrent Memory Transformer (Bulatov et al. 2022,
  section 3): ``m`` memory vectors are put before each chunk's token embeddings, the encoder's
  output states at those positions become the memory of the next chunk, and the memory states
  after the last chunk are the document's representation: the classifier reads them as it reads a
  chunk's tokens (their mean, or the first one where it reads ``[CLS]``). The first chunk's memory
  is learned (the paper's memory token embeddings), starting from the encoder's embedding of
  ``[CLS]`` where :meth:`ChunkedClassifier.wrap` is given its id, so that the pretrained layers
  treat the memory as a summary token from the first step. Gradients flow through every chunk
  (back-propagation through time over the chunks, as the paper trains). The memory positions take
  no position embedding (the chunk's tokens keep positions 0, 1, ...), and every token attends to them.
* ``xl``: Transformer-XL's segment-level recurrence (Dai et al. 2019, section 3.2) over the chunks: in every
  layer a chunk's keys and values also come from that layer's inputs at the last ``memory_len`` token
  positions of the earlier chunks (all of them where ``memory_len`` is 0), with the gradient stopped
  (:class:`attnkit.attention.memory.XLMemory`); the classifier reads the document's last chunk, whose
  tokens have seen the earlier ones in every layer. Each chunk keeps its own positions 0, 1, ...
  With every earlier chunk kept this is one pass over the whole document in which a chunk's tokens see
  their own chunk and the chunks before it.

A document that fits one chunk gives the encoder's classifier output in ``truncate`` and
``average``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.layers.pooling import mean_pool
from attnkit.models.base import PretrainedModel, register_model
from attnkit.models.bert import BertConfig
from attnkit.models.bert_heads import BertClassifier, BertTaskConfig

LongMode = Literal["truncate", "average", "memory", "xl"]


@dataclass
class ChunkedOutput:
    """What :class:`ChunkedClassifier` returns."""

    logits: Tensor  # (B, num_labels)


@dataclass(frozen=True, kw_only=True)
class ChunkedConfig(Config):
    """A classifier over chunks: the per-chunk ``head``, the ``long`` mode, ``memory_tokens`` m, ``chunk_len``
    tokens per chunk (without ``[CLS]``/``[SEP]``), at most ``max_chunks`` chunks per document, and ``memory_len``
    token positions of earlier chunks that ``xl`` keeps (0: all)."""

    head: BertTaskConfig = field(default_factory=BertTaskConfig)
    long: LongMode = "memory"
    memory_tokens: int = 4
    chunk_len: int = 126
    max_chunks: int = 8
    memory_len: int = 0

    @property
    def encoder(self) -> BertConfig:
        """The encoder's config."""
        return self.head.encoder

    def validate(self) -> None:
        check(self.memory_tokens > 0, "memory_tokens", self.memory_tokens, "must be positive")
        check(self.chunk_len > 0, "chunk_len", self.chunk_len, "must be positive")
        check(self.max_chunks > 0, "max_chunks", self.max_chunks, "must be positive")
        check(self.memory_len >= 0, "memory_len", self.memory_len, "must be >= 0 (0: every earlier chunk)")


def head_logits(head: BertClassifier, hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """The classifier's logits ``(B, L)`` from final token states ``hidden: (B, T, H)`` (as :class:`BertClassifier` pools them)."""
    c = head.config
    if c.classifier == "pooler":
        x = torch.tanh(head.bert.pooler(hidden[:, 0]))  # type: ignore[misc]
    elif c.classifier == "mean":
        x = mean_pool(hidden, attention_mask)
    else:
        act = torch.tanh if c.classifier == "cls_tanh" else nn.functional.gelu
        x = act(head.dense(head.drop(hidden[:, 0])))  # type: ignore[misc]
    return head.out(head.drop(x))  # (B, L)


@register_model("bert-chunked-classifier")
class ChunkedClassifier(PretrainedModel):
    """A BERT-family classifier applied chunk by chunk (see the module docstring)."""

    config_class = ChunkedConfig

    def __init__(self, config: ChunkedConfig) -> None:
        super().__init__()
        self.config = config
        self.head = BertClassifier(config.head)
        d = config.head.encoder.d_model
        self.memory = nn.Parameter(torch.randn(config.memory_tokens, d) * config.head.encoder.init_std)  # the first chunk's memory

    @property
    def bert(self) -> nn.Module:
        """The encoder (what fine-tuning and loading look for)."""
        return self.head.bert

    @classmethod
    def wrap(cls, head: BertClassifier, long: LongMode, *, memory_tokens: int, chunk_len: int, max_chunks: int,
             cls_id: int | None = None, memory_len: int = 0) -> "ChunkedClassifier":
        """A chunked classifier around a built ``head`` (its weights kept); with ``cls_id``, every memory token starts
        as the encoder's embedding of that token at position 0, plus the memory's random initialisation."""
        model = cls(ChunkedConfig(head=head.config, long=long, memory_tokens=memory_tokens, chunk_len=chunk_len, max_chunks=max_chunks,
                                  memory_len=memory_len))
        model.head.load_state_dict(head.state_dict())
        if cls_id is not None:
            device = model.memory.device
            with torch.no_grad():
                embed = model.head.bert.embed
                training = embed.training
                first = embed.eval()(torch.tensor([[cls_id]], device=device))[0, 0]  # (d,)
                embed.train(training)
                model.memory.add_(first.to(model.memory.dtype))
        return model

    def forward(self, ids: Tensor, attention_mask: Tensor | None = None, chunks: Tensor | None = None) -> ChunkedOutput:
        """Document logits ``(B, L)``.

        Args:
            ids: ``(B, C, T)`` each chunk as ``[CLS] tokens [SEP]``, padded (``(B, T)``: one chunk each).
            attention_mask: ``(B, C, T)`` 1 for real tokens (default: all).
            chunks: ``(B,)`` the number of real chunks of each document (default: ``C``).
        """
        if ids.dim() == 2:
            ids = ids[:, None]
            attention_mask = None if attention_mask is None else attention_mask[:, None]
        b, c, t = ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(ids)
        if chunks is None:
            chunks = torch.full((b,), c, device=ids.device)
        return ChunkedOutput(self._logits(ids, attention_mask, chunks))

    def _logits(self, ids: Tensor, attention_mask: Tensor, chunks: Tensor) -> Tensor:
        b, c, t = ids.shape
        mode = self.config.long
        if mode == "truncate":
            return self.head(ids[:, 0], attention_mask=attention_mask[:, 0]).logits
        if mode == "average":
            logits = self.head(ids.reshape(b * c, t), attention_mask=attention_mask.reshape(b * c, t)).logits.view(b, c, -1)
            real = (torch.arange(c, device=ids.device)[None, :] < chunks[:, None]).to(logits.dtype)  # (B, C)
            return (logits * real[..., None]).sum(1) / real.sum(1, keepdim=True)  # (B, L)
        if mode == "xl":
            return self._xl(ids, attention_mask, chunks)
        return self._recurrent(ids, attention_mask, chunks)

    def _xl(self, ids: Tensor, attention_mask: Tensor, chunks: Tensor) -> Tensor:
        from attnkit.attention.memory import new_memories

        b, c, t = ids.shape
        bert = self.head.bert
        mem_len = self.config.memory_len or (c - 1) * t  # 0: every earlier chunk
        memories = new_memories(len(bert.layers), mem_len)
        mem_keep = attention_mask.new_zeros(b, 0, dtype=torch.bool)  # (B, M): real tokens among the memory positions
        last, last_mask = None, attention_mask[:, 0]
        for i in range(c):
            keep = attention_mask[:, i].bool()  # (B, T)
            mask = torch.cat([mem_keep, keep], dim=1)[:, None, None, :]  # (B, 1, 1, M + T)
            x = bert.embed(ids[:, i])
            for layer, memory in zip(bert.layers, memories):
                x, _ = layer(x, mask, cache=memory)
            live = (i < chunks)[:, None]  # (B, 1): documents that have chunk i
            mem_keep = torch.cat([mem_keep, keep & live], dim=1)[:, -mem_len:] if mem_len else mem_keep
            at_last = (chunks - 1 == i)[:, None]  # (B, 1)
            last = x if last is None else torch.where(at_last[..., None], x, last)
            last_mask = torch.where(at_last, attention_mask[:, i], last_mask)
        assert last is not None
        return head_logits(self.head, last, last_mask)  # (B, L): the last chunk, having seen the earlier ones

    def _recurrent(self, ids: Tensor, attention_mask: Tensor, chunks: Tensor) -> Tensor:
        b, c, t = ids.shape
        bert, m = self.head.bert, self.config.memory_tokens
        mem = self.memory.to(bert.embed.tokens.weight.dtype).expand(b, -1, -1)  # (B, m, d)
        keep_m = torch.ones(b, m, dtype=torch.bool, device=ids.device)
        for i in range(c):
            x = torch.cat([mem, bert.embed(ids[:, i])], dim=1)  # (B, m + T, d)
            keep = torch.cat([keep_m, attention_mask[:, i].bool()], dim=1)  # (B, m + T)
            mask = keep[:, None, None, :]  # (B, 1, 1, m + T)
            for layer in bert.layers:
                x, _ = layer(x, mask)
            live = (i < chunks)[:, None]  # (B, 1): documents that have chunk i
            mem = torch.where(live[..., None], x[:, :m], mem)  # (B, m, d): the next chunk's memory
        return head_logits(self.head, mem, keep_m.long())  # (B, L): the memory after each document's last chunk


def chunk_ids(ids: list[int], cls_id: int, sep_id: int, chunk_len: int, max_chunks: int) -> list[list[int]]:
    """``[CLS] x [SEP]`` (one encoded document) as chunks ``[CLS] piece [SEP]`` of ``chunk_len`` tokens; the first
    ``max_chunks`` are kept.

    Args:
        ids: the document as the tokenizer encodes it, ``[CLS]`` first and ``[SEP]`` last.
        cls_id: the ``[CLS]`` id.
        sep_id: the ``[SEP]`` id.
        chunk_len: tokens per chunk, without the two specials.
        max_chunks: chunks kept.
    """
    body = ids[1:-1]
    pieces = [body[i : i + chunk_len] for i in range(0, max(len(body), 1), chunk_len)][:max_chunks]
    return [[cls_id, *p, sep_id] for p in pieces]


def collate_chunks(docs: list[list[list[int]]], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pad documents of chunks to ``(B, C, T)`` ids and mask, and their chunk counts ``(B,)``."""
    c = max(len(d) for d in docs)
    t = max(len(ch) for d in docs for ch in d)
    ids = torch.full((len(docs), c, t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(docs), c, t), dtype=torch.long)
    for i, d in enumerate(docs):
        for j, ch in enumerate(d):
            ids[i, j, : len(ch)] = torch.tensor(ch)
            mask[i, j, : len(ch)] = 1
    # a missing chunk still needs one visible key: its [CLS] slot (its output is never used)
    mask[:, :, 0] = 1
    return ids, mask, torch.tensor([len(d) for d in docs])
