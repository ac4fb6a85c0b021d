"""Prefix tuning (Li & Liang 2021) and deep prompt tuning (P-tuning v2, Liu et al. 2022) inside attention.

Prefix tuning (section 4.2, equation 2) keeps the model frozen and gives every layer ``P``
trainable *virtual* key and value vectors, prepended to the keys and values the layer computes
from its input: each query attends to ``[P_k; K]`` and mixes ``[P_v; V]``. Optimising the
table directly is unstable, so the paper reparameterises it (section 4.3): a smaller matrix
``P'`` (``P x d``) goes through an MLP (Linear, tanh, Linear) to all layers' keys and values;
after training only the table is kept. P-tuning v2 (Liu et al. 2022, section 3.2) is the same
deep prompt without the reparameterisation, for classification and tagging with a trained head.

Initialisation: ``P'`` is a table of free input vectors, one per prefix position, drawn from
N(0, 1) as an embedding table is (the paper's released code and peft hold it as an embedding);
the MLP's layers keep ``nn.Linear``'s default. Inputs of unit scale make the ``P`` rows of the
MLP's output differ from one another from the start: with inputs near zero every row is close
to the MLP's output biases and the prefix begins as ``P`` copies of one key and value. The
directly trained table of P-tuning v2 is drawn from N(0, 1) likewise.

The table has peft's layout, ``(P, n_layers * 2 * d_model)``: per virtual token, layer 0's key,
layer 0's value, layer 1's key, ...; each ``d_model`` vector splits into heads as the layer's
own keys do. Keys and values enter the layer through its attention kernel
(:class:`PrefixKernel` wraps it), after the projections, positions and the KV cache: the cache
stores only real tokens, and every kernel call (the whole sequence, or one decoding step) sees
the ``P`` prefix positions first. Padding masks and score biases get ``P`` visible columns; a
causal mask aligned bottom-right (as attnkit's kernels align it) leaves the prefix visible to
every query. The encoders' real tokens keep positions ``0 .. T-1`` (equation 2 changes keys and
values only); a GPT's learned positions start at ``P`` instead, as in the paper's code, which
feeds the prefix to GPT-2 as past keys and values (so peft and Hugging Face do the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from attnkit.config import Config, check


@dataclass(frozen=True, kw_only=True)
class PrefixConfig(Config):
    """Prefix-tuning settings: ``n_virtual`` prefix positions per layer; ``reparam`` the MLP of
    section 4.3 with ``hidden`` units (off: P-tuning v2's deep prompts); ``modules_to_save`` as in LoRA."""

    n_virtual: int = 10
    reparam: bool = True
    hidden: int = 512
    modules_to_save: tuple[str, ...] | None = None

    def validate(self) -> None:
        check(self.n_virtual > 0, "n_virtual", self.n_virtual, "must be positive")
        check(self.hidden > 0, "hidden", self.hidden, "must be positive")


class PrefixTable(nn.Module):
    """All layers' virtual keys and values, ``(P, n_layers * 2 * d_model)``; trained directly or through the MLP.

    Args:
        n_virtual: prefix length P.
        n_layers: attention layers that get a prefix.
        d_model: the width of one key (all heads).
        reparam: compute the table as ``MLP(P')`` (section 4.3), ``P'`` drawn from N(0, 1).
        hidden: the MLP's hidden width.
    """

    def __init__(self, n_virtual: int, n_layers: int, d_model: int, *, reparam: bool = False, hidden: int = 512) -> None:
        super().__init__()
        self.n_virtual, self.n_layers, self.d_model = n_virtual, n_layers, d_model
        width = n_layers * 2 * d_model
        if reparam:
            self.embedding = nn.Parameter(torch.randn(n_virtual, d_model))  # P' ~ N(0, 1)
            self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.Tanh(), nn.Linear(hidden, width))
            self.table = None
        else:
            self.embedding = None
            self.mlp = None
            self.table = nn.Parameter(torch.randn(n_virtual, width))  # N(0, 1)

    def full(self) -> Tensor:
        """``(P, n_layers * 2 * d_model)``: the table (through the MLP when reparameterised)."""
        return self.table if self.mlp is None else self.mlp(self.embedding)

    @torch.no_grad()
    def freeze_table(self) -> None:
        """Replace the MLP by the table it computes (what is kept after training, section 4.3)."""
        if self.mlp is not None:
            self.table = nn.Parameter(self.full().detach().clone())
            self.mlp = None
            self.embedding = None

    def layer(self, i: int, n_heads: int, batch: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Layer ``i``'s ``(B, H, P, d_k)`` keys and values."""
        t = self.full().view(self.n_virtual, self.n_layers, 2, n_heads, self.d_model // n_heads)  # (P, L, 2, H, d_k)
        kv = t[:, i].permute(1, 2, 0, 3).to(dtype)  # (2, H, P, d_k)
        return kv[0].expand(batch, -1, -1, -1), kv[1].expand(batch, -1, -1, -1)


def pad_columns(t: Tensor | None, n: int, value: Any) -> Tensor | None:
    """Prepend ``n`` key columns filled with ``value`` to a mask or bias whose last dimension is the keys."""
    if t is None or t.shape[-1] == 1:
        return t  # absent, or broadcast over the keys
    pad = t.new_full((*t.shape[:-1], n), value)
    return torch.cat([pad, t], dim=-1)


class PrefixKernel(nn.Module):
    """An attention kernel with layer ``index``'s virtual keys and values prepended to whatever it attends to.

    ``table`` is held without registering it as a child (it is the model's ``prefix_table``).
    """

    def __init__(self, inner: nn.Module, table: PrefixTable, index: int, n_heads: int) -> None:
        super().__init__()
        self.inner = inner
        object.__setattr__(self, "_table", table)
        self.index, self.n_heads = index, n_heads

    def forward(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                causal: bool = False, **kw: Any) -> Any:
        pk, pv = self._table.layer(self.index, self.n_heads, k.shape[0], k.dtype)  # (B, H, P, d_k)
        if pk.shape[1] != k.shape[1]:  # grouped-query attention: the prefix has one key per query head
            raise ValueError(f"prefix tuning needs as many key heads as query heads ({k.shape[1]} != {pk.shape[1]})")
        n = pk.shape[2]
        k = torch.cat([pk, k], dim=2)  # (B, H, P + Tk, d_k)
        v = torch.cat([pv, v], dim=2)
        if mask is not None and mask.dtype == torch.bool:
            mask = pad_columns(mask, n, True)
        bias = pad_columns(bias, n, 0.0)
        if causal and mask is None and bias is None:
            return self.inner(q, k, v, causal=True, **kw)  # bottom-right aligned: the prefix stays visible
        if causal:
            tq, tk = q.shape[2], k.shape[2]
            allowed = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(tk - tq)  # (Tq, P + Tk)
            mask = allowed if mask is None else mask & allowed
        return self.inner(q, k, v, mask=mask, bias=bias, causal=False, **kw)


class ShiftedEmbedding(nn.Module):
    """A position table read ``shift`` rows further on (GPT after a prefix); the weight keeps its name."""

    def __init__(self, table: nn.Embedding, shift: int) -> None:
        super().__init__()
        self.weight, self.shift = table.weight, shift

    def forward(self, positions: Tensor) -> Tensor:
        return nn.functional.embedding(positions + self.shift, self.weight)


class ShiftedPositions(nn.Module):
    """:class:`~attnkit.layers.positional.LearnedPositions` whose positions start at ``shift``."""

    def __init__(self, inner: nn.Module, shift: int) -> None:
        super().__init__()
        self.embedding, self.shift = ShiftedEmbedding(inner.embedding, shift), shift

    def forward(self, positions: Tensor) -> Tensor:
        return self.embedding(positions)

    def span(self, start: int, length: int) -> Tensor:
        return self.embedding.weight[start + self.shift : start + self.shift + length]


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The self-attention modules of ``model`` in order (one prefix each)."""
    from attnkit.attention.multihead import MultiHeadAttention

    return [(n, m) for n, m in model.named_modules() if isinstance(m, MultiHeadAttention) and not m.cross]


def apply_prefix(model: nn.Module, config: PrefixConfig) -> nn.Module:
    """Give every self-attention layer of ``model`` trainable virtual keys and values, in place.

    The base is frozen; ``model.prefix_table`` (a :class:`PrefixTable`) and the task head
    (``modules_to_save``, default the model's head) train.

    Args:
        model: a built model.
        config: prefix length and reparameterisation.

    Returns:
        ``model``.
    """
    from attnkit.peft.lora import freeze, head_modules

    layers = attention_layers(model)
    if not layers:
        from attnkit.errors import ConfigError

        raise ConfigError(f"{type(model).__name__} has no self-attention layers to give a prefix")
    keep = config.modules_to_save if config.modules_to_save is not None else head_modules(model)
    freeze(model, keep)
    first = layers[0][1]
    table = PrefixTable(config.n_virtual, len(layers), first.d_model, reparam=config.reparam, hidden=config.hidden)
    model.prefix_table = table.to(next(model.parameters()).device)
    for i, (_, attn) in enumerate(layers):
        attn.kernel = PrefixKernel(attn.kernel, model.prefix_table, i, attn.n_heads)
    from attnkit.layers.positional import LearnedPositions

    if isinstance(getattr(model, "positions", None), LearnedPositions):  # GPT: positions start after the prefix
        model.positions = ShiftedPositions(model.positions, config.n_virtual)
    return model


__all__ = ["PrefixConfig", "PrefixKernel", "PrefixTable", "apply_prefix", "attention_layers", "pad_columns"]
