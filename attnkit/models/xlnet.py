"""XLNet (Yang et al. 2019): permutation language modelling with two-stream self-attention.

Each layer keeps two streams (section 2.3, eq. 4-5). The *content* stream ``h_i`` encodes token
``x_i`` in its context, as a Transformer-XL layer does; the *query* stream ``g_i`` starts from one
learned vector ``w`` (``mask_emb``), knows the position it predicts but not its token, and is what
predicts it. With a factorisation order ``z`` (``perm_mask[b, i, j] = 1``: i may not see j):

    g_i <- Attention(Q = g_i, KV = h_{z<t})        the query stream sees the content before it
    h_i <- Attention(Q = h_i, KV = h_{z<=t})       the content stream also sees itself

Both use Transformer-XL's relative attention (Dai et al. 2019, section 3.3) with XLNet's relative
segment encoding (section 2.5): for query i and key j,

    score = (q_i + u)·k_j + (q_i + v)·R_{i-j} + (q_i + b)·s_ij,     scaled by 1/sqrt(d_head)

with ``R`` sinusoidal encodings of the distance projected by ``W_r``, and ``s_ij`` one of two learned
vectors (same segment or not). Then the output projection, residual and LayerNorm (post-norm), and the
position-wise FFN with its residual and LayerNorm, shared by both streams. The output layer is tied
to the word embeddings. Only the query stream's positions named by ``target_mapping`` (partial
prediction, section 2.3) are returned when it is given.

As the reference implementation, masked scores get ``-1e30`` added rather than being removed, so a
query that may see nothing attends uniformly. Transformer-XL's memory (section 2.3) is
:meth:`XLNetModel.stream`'s ``mems``. Bidirectional data and ``clamp_len`` are not implemented;
per-layer biases ``u, v, b`` (``untie_r``) are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.layers.ffn import activation
from attnkit.models.base import PretrainedModel, init_normal, register_model


@dataclass(frozen=True, kw_only=True)
class XLNetConfig(Config):
    """XLNet's sizes (defaults: XLNet-base, except the vocabulary).

    ``max_len``: the longest input fine-tuning and prediction give it; the relative positions
    themselves have no limit.
    """

    vocab_size: int = 32000
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int = 3072
    activation: str = "gelu"
    dropout: float = 0.1
    norm_eps: float = 1e-12
    init_std: float = 0.02
    pad_id: int = 5
    max_len: int = 512

    def validate(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff"):
            check(getattr(self, name) > 0, name, getattr(self, name), "must be positive")
        check(self.d_model % self.n_heads == 0, "n_heads", self.n_heads, f"must divide d_model={self.d_model}")
        check(self.d_model % 2 == 0, "d_model", self.d_model, "must be even (sin and cos halves of the position encoding)")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        check(self.max_len > 0, "max_len", self.max_len, "must be positive")


def relative_encoding(length: int, d_model: int, device: torch.device, keys: int | None = None) -> Tensor:
    """Sinusoids of the distances ``keys, keys - 1, ..., -length + 1`` (Transformer-XL), sin half then cos half:
    ``(keys + length, d_model)``; ``keys`` (memory plus segment) defaults to ``length``."""
    keys = length if keys is None else keys
    inv_freq = 1.0 / 10000 ** (torch.arange(0, d_model, 2.0, device=device) / d_model)  # (d/2,)
    distance = torch.arange(keys, -length, -1.0, device=device)  # (K + T,)
    angle = distance[:, None] * inv_freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class TwoStreamAttention(nn.Module):
    """Relative multi-head attention (eq. above) with its output projection, residual and LayerNorm."""

    def __init__(self, c: XLNetConfig) -> None:
        super().__init__()
        self.n_heads, self.d_head = c.n_heads, c.d_model // c.n_heads
        self.q = nn.Linear(c.d_model, c.d_model, bias=False)
        self.k = nn.Linear(c.d_model, c.d_model, bias=False)
        self.v = nn.Linear(c.d_model, c.d_model, bias=False)
        self.r = nn.Linear(c.d_model, c.d_model, bias=False)
        self.o = nn.Linear(c.d_model, c.d_model, bias=False)
        self.content_bias = nn.Parameter(torch.zeros(c.n_heads, self.d_head))  # u
        self.position_bias = nn.Parameter(torch.zeros(c.n_heads, self.d_head))  # v
        self.segment_bias = nn.Parameter(torch.zeros(c.n_heads, self.d_head))  # b
        self.segment_embed = nn.Parameter(torch.zeros(2, c.n_heads, self.d_head))  # s: same segment, other segment
        self.norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.drop = nn.Dropout(c.dropout)

    def heads(self, x: Tensor) -> Tensor:
        return x.view(*x.shape[:-1], self.n_heads, self.d_head)  # (B, L, H, Dh)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, kr: Tensor, other_segment: Tensor | None, mask: Tensor | None) -> Tensor:
        """``q: (B, T, H, Dh)`` over keys ``k, v: (B, K, H, Dh)`` (``K - T`` memory positions, then the segment),
        ``kr: (K + T, H, Dh)`` -> ``(B, T, H, Dh)``."""
        T, K = q.shape[1], k.shape[1]
        content = torch.einsum("bihd,bjhd->bhij", q + self.content_bias, k)  # (B, H, T, K)
        by_distance = torch.einsum("bihd,rhd->bhir", q + self.position_bias, kr)  # (B, H, T, K + T): every distance
        i, j = torch.arange(T, device=q.device)[:, None], torch.arange(K, device=q.device)[None, :]
        # query i sits at K - T + i; its distance to key j is at row K - (K - T + i - j) = T - i + j of kr
        index = (T - i + j).expand(*by_distance.shape[:2], T, K)
        position = by_distance.gather(-1, index)  # (B, H, T, K)
        score = content + position
        if other_segment is not None:
            seg = torch.einsum("bihd,shd->bhis", q + self.segment_bias, self.segment_embed)  # (B, H, T, 2)
            score = score + torch.where(other_segment[:, None], seg[..., 1:2], seg[..., 0:1])  # (B, H, T, K)
        score = score.float() / math.sqrt(self.d_head)
        if mask is not None:
            score = score - 1e30 * mask[:, None].float()  # the reference's masking: a fully masked row attends uniformly
        prob = self.drop(torch.softmax(score, dim=-1).to(v.dtype))
        return torch.einsum("bhij,bjhd->bihd", prob, v)

    def post(self, x: Tensor, attended: Tensor) -> Tensor:
        return self.norm(x + self.drop(self.o(attended.flatten(-2))))  # (B, L, d_model)


class XLNetLayer(nn.Module):
    """Two-stream relative attention, then the FFN (both with residual + LayerNorm), for both streams."""

    def __init__(self, c: XLNetConfig) -> None:
        super().__init__()
        self.attn = TwoStreamAttention(c)
        self.w1 = nn.Linear(c.d_model, c.d_ff)
        self.w2 = nn.Linear(c.d_ff, c.d_model)
        self.act = activation(c.activation)
        self.ffn_norm = nn.LayerNorm(c.d_model, eps=c.norm_eps)
        self.drop = nn.Dropout(c.dropout)

    def ffn(self, x: Tensor) -> Tensor:
        return self.ffn_norm(x + self.drop(self.w2(self.drop(self.act(self.w1(x))))))

    def forward(self, h: Tensor, g: Tensor | None, r: Tensor, other_segment: Tensor | None, content_mask: Tensor | None,
                query_mask: Tensor | None, target_mapping: Tensor | None, mem: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        a = self.attn
        kv = h if mem is None else torch.cat([mem, h], dim=1)  # (B, K, d): the memory, then the segment
        k, v, kr = a.heads(a.k(kv)), a.heads(a.v(kv)), a.heads(a.r(r))  # keys and values come from the content stream
        h_new = a.post(h, a.attend(a.heads(a.q(h)), k, v, kr, other_segment, content_mask))
        g_new = None
        if g is not None:
            qg = a.heads(a.q(g))  # (B, P, H, Dh): one query per predicted position
            if target_mapping is not None:
                qg = torch.einsum("bphd,bpt->bthd", qg, target_mapping)  # placed at the positions they predict
            out = a.attend(qg, k, v, kr, other_segment, query_mask)
            if target_mapping is not None:
                out = torch.einsum("bthd,bpt->bphd", out, target_mapping)
            g_new = self.ffn(a.post(g, out))
        return self.ffn(h_new), g_new


@dataclass
class XLNetOutput:
    """Logits of the query stream at the predicted positions (or of the content stream without a query stream)."""

    logits: Tensor  # (B, P, V) or (B, T, V)
    hidden: Tensor  # (B, P, d_model) or (B, T, d_model)
    mems: list[Tensor] | None = None  # with mem_len: each layer's memory for the next segment


@register_model("xlnet")
class XLNetModel(PretrainedModel):
    """XLNet's two-stream stack without an output layer: the encoder that fine-tuning heads sit on.

    ``forward(ids, ...)`` returns the last layer's states (after dropout): the query stream's at the
    positions of ``target_mapping`` when it is given, else the content stream's ``(B, T, d_model)``.
    """

    config_class = XLNetConfig

    def __init__(self, config: XLNetConfig) -> None:
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model)
        self.mask_emb = nn.Parameter(torch.zeros(1, 1, c.d_model))  # w: where every query stream starts
        self.layers = nn.ModuleList(XLNetLayer(c) for _ in range(c.n_layers))
        self.drop = nn.Dropout(c.dropout)
        init_normal(self, c.init_std)
        for m in self.modules():
            if isinstance(m, TwoStreamAttention):
                for p in (m.content_bias, m.position_bias, m.segment_bias, m.segment_embed):
                    nn.init.normal_(p, std=c.init_std)
        nn.init.normal_(self.mask_emb, std=c.init_std)

    def forward(self, ids: Tensor, *, perm_mask: Tensor | None = None, target_mapping: Tensor | None = None,
                segment_ids: Tensor | None = None, attention_mask: Tensor | None = None) -> Tensor:
        """Run both streams (without memory; :meth:`stream` takes and returns one).

        Args:
            ids: ``(B, T)`` tokens.
            perm_mask: ``(B, T, T)``, 1 where token i may not see token j (the factorisation order); None: all visible.
            target_mapping: ``(B, P, T)`` one-hot: the P positions predicted (None: no query stream).
            segment_ids: ``(B, T)``; tokens of different segments get the "other segment" encoding.
            attention_mask: ``(B, T)`` 1 for real tokens; padding keys are never seen.
        """
        return self.stream(ids, perm_mask=perm_mask, target_mapping=target_mapping, segment_ids=segment_ids,
                           attention_mask=attention_mask)[0]

    def stream(self, ids: Tensor, *, perm_mask: Tensor | None = None, target_mapping: Tensor | None = None,
               segment_ids: Tensor | None = None, attention_mask: Tensor | None = None, mems: list[Tensor] | None = None,
               mem_len: int = 0, reuse_len: int | None = None) -> tuple[Tensor, list[Tensor] | None]:
        """:meth:`forward` with Transformer-XL's segment-level recurrence (Yang et al. 2019, section 2.3, eq. after 5).

        Each layer's keys and values come from ``[mems[l]; h]``: the cached content states of the segments
        before (every one visible, segment id 0, at the distances before the first token) and the segment.

        Args:
            mems: per layer ``(B, M, d_model)``, the layer's inputs over the previous positions (or None).
            mem_len: the positions kept for the next segment (0: no memory returned).
            reuse_len: only the segment's first ``reuse_len`` positions go into the memory (None: all).

        Returns:
            ``(states, new_mems)``: :meth:`forward`'s states, and per layer the last ``mem_len`` positions of
            ``[mems[l]; h_l[:, :reuse_len]]`` with the gradient stopped (None without ``mem_len``).
        """
        B, T = ids.shape
        M = mems[0].shape[1] if mems else 0
        if mems is not None and len(mems) != len(self.layers):
            raise ValueError(f"mems has {len(mems)} entries; the model has {len(self.layers)} layers")
        mask = perm_mask.float() if perm_mask is not None else None
        if attention_mask is not None:
            pad = (1 - attention_mask.float())[:, None, :].expand(B, T, T)
            mask = pad if mask is None else mask + pad
        if mask is not None and M:
            mask = torch.cat([mask.new_zeros(B, T, M), mask], dim=-1)  # the memory is always visible
        query_mask = mask > 0 if mask is not None else None  # (B, T, M + T)
        content_mask = None
        if query_mask is not None:  # the content stream sees itself: query i's own key is M + i
            self_key = torch.arange(M + T, device=ids.device)[None, :] == torch.arange(M, M + T, device=ids.device)[:, None]
            content_mask = query_mask & ~self_key
        other = None
        if segment_ids is not None:  # (B, T, M + T); memory positions count as segment 0
            keys = torch.cat([segment_ids.new_zeros(B, M), segment_ids], dim=1) if M else segment_ids
            other = segment_ids[:, :, None] != keys[:, None, :]
        h = self.drop(self.embed(ids))  # (B, T, d_model)
        g = self.drop(self.mask_emb.expand(B, target_mapping.shape[1], -1)) if target_mapping is not None else None
        r = self.drop(relative_encoding(T, self.config.d_model, ids.device, keys=M + T).to(h.dtype))  # (M + 2T, d_model)
        new_mems: list[Tensor] | None = [] if mem_len > 0 else None
        for n, layer in enumerate(self.layers):
            mem = mems[n] if mems else None
            if new_mems is not None:
                kept = h if reuse_len is None else h[:, :reuse_len]
                new_mems.append((kept if mem is None else torch.cat([mem, kept], dim=1))[:, -mem_len:].detach())
            h, g = layer(h, g, r, other, content_mask, query_mask, target_mapping, mem)
        return self.drop(g if g is not None else h), new_mems


@register_model("xlnet-lm")
class XLNetLM(XLNetModel):
    """XLNet with its tied language-model head; ``forward(ids, perm_mask=, target_mapping=)`` gives :class:`XLNetOutput`."""

    def __init__(self, config: XLNetConfig) -> None:
        super().__init__(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        nn.init.zeros_(self.lm_head.bias)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids: Tensor, **kw) -> XLNetOutput:  # type: ignore[override]
        """:meth:`XLNetModel.stream`'s arguments; the logits of the states it returns, and the new memory."""
        out, mems = self.stream(ids, **kw)
        return XLNetOutput(logits=self.lm_head(out), hidden=out, mems=mems)
