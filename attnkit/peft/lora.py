"""LoRA (Hu et al. 2021) and DoRA (Liu et al. 2024) on the linear layers of a built model.

LoRA (section 4.1, equation 3): a frozen weight ``W_0 (d_out, d_in)`` gets a trainable low-rank
update, ``h = W_0 x + (alpha / r) B A x`` with ``A (r, d_in)`` initialised like a linear layer
(Kaiming-uniform) and ``B (d_out, r)`` zero, so training starts from the pretrained function.
rsLoRA (Kalajdzievski 2023) scales by ``alpha / sqrt(r)`` instead, which keeps the update's
magnitude stable as ``r`` grows. Dropout, when set, applies to the input of the low-rank path.

DoRA (Liu et al. 2024, section 4.1, equation 5) splits the weight into a magnitude vector and a
direction: ``W' = m * (W_0 + s B A) / ||W_0 + s B A||_c``, the norm taken per output unit and
``m`` initialised to ``||W_0||_c``; the norm is treated as a constant in the backward pass
(section 4.3), so ``h = (m / n) (W_0 x + s B A x) + b``.

:class:`LoRALinear` holds one adapter per *slice* of the rows of its layer, so the fused Q/K/V
projection of attnkit's attention takes separate ``A``/``B`` pairs for Q, K and V (the paper's
default adapts W_q and W_v only, section 7.1). The base product runs once on the frozen weight
(autograd computes no weight gradient for it); the low-rank path is one small matmul into all
slices' ranks (``x A^T``, ``(..., n_slices * r)``) and one matmul-add back into the layer's output
through every slice's ``B`` placed in its rows (:meth:`LoRALinear.placed_B`), so a fused Q/K/V
projection costs two matmuls whatever the number of slices, and no copy of the output. Under
autocast the input is cast once and shared by the base product and the adapter.

Merging (section 4.1, "No additional inference latency") adds ``s B A`` into the rows of ``W_0``
(DoRA: replaces them by ``W'``); unmerging subtracts it again, exactly up to fp32 rounding. A base
stored in NF4 (QLoRA) is not merged in place: re-quantizing would change the outputs; use
:func:`merge_and_unload`, which writes a full-precision layer.

QLoRA (Dettmers et al. 2023, section 3) quantizes the linear layers of the base; the token
embedding table stays in 16 bits, as in the paper, bitsandbytes and peft. ``quantize_embeddings``
stores it in NF4 too (:class:`~attnkit.peft.nf4.NF4Embedding`, the same blocksize and double
quantization), with an output layer tied to it reading the same quantized state
(:class:`~attnkit.peft.nf4.NF4TiedLinear`). It stays frozen and takes no adapter: it is base
weight, so adapter files do not contain it, and ``merge_and_unload`` writes it back as a
full-precision table (re-tied to the output layer). Its rows must be whole blocks (width a
multiple of ``blocksize``); otherwise :func:`apply_lora` refuses with a :class:`ConfigError`
naming the option rather than silently keeping the table in 16 bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.peft.nf4 import NF4Embedding, NF4Linear, NF4TiedLinear, quantize_linears
from attnkit.peft.targets import Target, select


@dataclass(frozen=True, kw_only=True)
class LoRAConfig(Config):
    """LoRA settings.

    ``targets`` are name patterns (:mod:`attnkit.peft.targets`; ``q``, ``v`` are the fused
    projection's slices). ``modules_to_save`` are trained in full and saved with the adapter
    (default ``None``: the task head of the model, if it has one). ``quantize="nf4"`` stores every
    other linear layer of the base in NF4 first (QLoRA); ``quantize_embeddings=True`` (with
    ``quantize="nf4"``; default off, as in the paper) stores the token embedding table in NF4 too,
    and the output layer tied to it computes through its dequantized rows.
    """

    r: int = 8
    alpha: float = 8.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "v")
    rslora: bool = False
    dora: bool = False
    modules_to_save: tuple[str, ...] | None = None
    quantize: Literal["none", "nf4"] = "none"
    quantize_embeddings: bool = False
    blocksize: int = 64

    def validate(self) -> None:
        check(self.r > 0, "r", self.r, "must be a positive rank")
        check(self.alpha > 0, "alpha", self.alpha, "must be positive")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        check(not self.quantize_embeddings or self.quantize == "nf4", "quantize_embeddings", self.quantize_embeddings,
              "needs quantize='nf4' (QLoRA)")
        check(self.blocksize in (32, 64, 128, 256, 512, 1024, 2048, 4096), "blocksize", self.blocksize, "must be a power of two in 32..4096")

    @property
    def scaling(self) -> float:
        """``alpha / r`` (LoRA) or ``alpha / sqrt(r)`` (rsLoRA)."""
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


class LoRALinear(nn.Module):
    """A frozen linear layer (``nn.Linear`` or :class:`~attnkit.peft.nf4.NF4Linear`) plus low-rank updates of row slices.

    Args:
        base: the frozen layer.
        parts: ``(name, start, stop)`` row slices to adapt (``("all", 0, d_out)`` for the whole layer).
        config: rank, alpha, dropout, rsLoRA, DoRA.
    """

    def __init__(self, base: nn.Module, parts: list[tuple[str, int, int]], config: LoRAConfig) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.parts = [(n, a, b) for n, a, b in sorted(parts, key=lambda p: p[1])]
        self.r, self.scaling, self.use_dora = config.r, config.scaling, config.dora
        w = self.base_weight()
        dtype = w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for name, a, b in self.parts:
            A = torch.empty(config.r, self.in_features, dtype=dtype, device=w.device)
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))  # as nn.Linear initialises its weight
            self.lora_A[name] = nn.Parameter(A)
            self.lora_B[name] = nn.Parameter(torch.zeros(b - a, config.r, dtype=dtype, device=w.device))
        self.magnitude = nn.ParameterDict()
        if config.dora:
            for name, a, b in self.parts:
                self.magnitude[name] = nn.Parameter(w[a:b].float().norm(dim=1).to(dtype))  # m = ||W_0||_c
        self.dropout = nn.Dropout(config.dropout) if config.dropout else None
        self.merged = False
        self._norms: dict[str, Tensor] = {}

    @property
    def quantized(self) -> bool:
        return isinstance(self.base, (NF4Linear, NF4TiedLinear))

    def base_weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """The frozen weight ``(d_out, d_in)`` (dequantized from NF4 when stored so)."""
        if isinstance(self.base, (NF4Linear, NF4TiedLinear)):
            return self.base.dequantized(dtype)
        w = self.base.weight
        return w if dtype is None else w.to(dtype)

    def delta(self, name: str) -> Tensor:
        """``s B A`` of slice ``name``: ``(stop - start, d_in)``."""
        return self.scaling * (self.lora_B[name] @ self.lora_A[name])

    def _dora_scale(self, name: str, a: int, b: int, w: Tensor) -> Tensor:
        """``m / ||W_0 + s B A||_c`` of a slice, the norm detached (DoRA section 4.3)."""
        norm = (w[a:b] + self.delta(name).to(w.dtype)).norm(dim=1).detach()  # (stop - start,)
        return self.magnitude[name] / norm

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_autocast_enabled(x.device.type) and x.is_floating_point():
            # the cast autocast makes inside each matmul, made once: the base and the adapter read the same copy
            x = x.to(torch.get_autocast_dtype(x.device.type))
        y = self.base(x)  # (..., d_out): the frozen product; no weight gradient
        if self.merged:
            return y
        xd = self.dropout(x) if self.dropout is not None else x
        h = F.linear(xd, self.stacked_A().to(x.dtype))  # (..., n * r): x A^T for every slice at once
        if self.use_dora:
            return self._dora(x, xd, y, h)
        # y + s h B^T in one matmul: every slice's B placed in its rows and rank columns of one (d_out, n * r) matrix
        out = torch.addmm(y.reshape(-1, self.out_features), h.reshape(-1, h.shape[-1]), self.placed_B().to(y.dtype).t(),
                          alpha=self.scaling)  # (N, d_out)
        return out.view(y.shape)

    def stacked_A(self) -> Tensor:
        """Every slice's ``A`` stacked by rows: ``(n_slices * r, d_in)``."""
        names = [n for n, _, _ in self.parts]
        return self.lora_A[names[0]] if len(names) == 1 else torch.cat([self.lora_A[n] for n in names])

    def placed_B(self) -> Tensor:
        """Every slice's ``B`` in its rows and its ``A``'s rank columns, zero elsewhere: ``(d_out, n_slices * r)``.

        ``placed_B() @ stacked_A()`` is the update of the whole layer, so ``h placed_B()^T`` (``h = x
        stacked_A()^T``) adds each slice's ``B A x`` to its rows in one matmul, and nothing to rows no
        slice covers.
        """
        n, r = len(self.parts), self.r
        if n == 1 and self.parts[0][1:] == (0, self.out_features):
            return self.lora_B[self.parts[0][0]]
        rows, end = [], 0
        for i, (name, a, b) in enumerate(self.parts):
            B = self.lora_B[name]
            if a > end:  # rows no slice adapts
                rows.append(B.new_zeros(a - end, n * r))
            rows.append(F.pad(B, (i * r, (n - 1 - i) * r)))  # (b - a, n * r)
            end = b
        if end < self.out_features:
            rows.append(rows[-1].new_zeros(self.out_features - end, n * r))
        return torch.cat(rows)  # (d_out, n * r)

    def _dora(self, x: Tensor, xd: Tensor, y: Tensor, h: Tensor) -> Tensor:
        w = self.base_weight(x.dtype)
        bias = getattr(self.base, "bias", None)
        parts = []
        for i, (name, a, b) in enumerate(self.parts):
            scale = self._dora_scale(name, a, b, w).to(x.dtype)  # (stop - start,)
            if xd is x:
                base = y[..., a:b] - bias[a:b].to(x.dtype) if bias is not None else y[..., a:b]  # W_0 x
            else:  # dropout on the adapter's input: its own base product (as peft does)
                base = F.linear(xd, w[a:b])
            lora = F.linear(h[..., i * self.r : (i + 1) * self.r], self.lora_B[name].to(x.dtype)) * self.scaling
            parts.append((a, b, (scale - 1) * base + scale * lora))
        y = y.clone()  # the base product is saved for the backward of (scale - 1) * base: add into a copy
        for a, b, d in parts:
            y[..., a:b] += d
        return y

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the updates into the base weight (exact up to fp32 rounding); an NF4 base refuses."""
        if self.merged:
            return
        if self.quantized:
            raise ConfigError("merging LoRA into an NF4 base would re-quantize it and change the outputs; "
                              "merge_and_unload writes a full-precision layer instead")
        w = self.base.weight
        for name, a, b in self.parts:
            if self.use_dora:
                self._norms[name] = (w[a:b] + self.delta(name).to(w.dtype)).norm(dim=1)
                w[a:b] = (self.magnitude[name] / self._norms[name])[:, None].to(w.dtype) * (w[a:b] + self.delta(name).to(w.dtype))
            else:
                w[a:b] += self.delta(name).to(w.dtype)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`."""
        if not self.merged:
            return
        w = self.base.weight
        for name, a, b in self.parts:
            if self.use_dora:
                w[a:b] = w[a:b] * (self._norms.pop(name) / self.magnitude[name])[:, None].to(w.dtype) - self.delta(name).to(w.dtype)
            else:
                w[a:b] -= self.delta(name).to(w.dtype)
        self.merged = False

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing what this layer computes (an NF4 base is dequantized to fp32 first)."""
        w = self.base_weight(torch.float32).clone() if not self.merged else self.base.weight.detach().float().clone()
        if not self.merged:
            for name, a, b in self.parts:
                updated = w[a:b] + self.delta(name).float()
                w[a:b] = (self.magnitude[name].float() / updated.norm(dim=1))[:, None] * updated if self.use_dora else updated
        bias = getattr(self.base, "bias", None)
        out = nn.Linear(self.in_features, self.out_features, bias=bias is not None, device=w.device)
        out.weight.copy_(w)
        if bias is not None:
            out.bias.copy_(bias.float())
        return out

    def extra_repr(self) -> str:
        parts = ", ".join(n for n, _, _ in self.parts)
        return f"r={self.r}, scaling={self.scaling:g}, parts=({parts}){', dora' if self.use_dora else ''}"


def head_modules(model: nn.Module) -> tuple[str, ...]:
    """The task head of a model (trained in full with an adapter): attnkit heads' ``dense`` and ``out`` layers."""
    if hasattr(model, "bert") and hasattr(model, "out") and type(model).__name__ not in ("BertMLM",):
        return tuple(n for n in ("dense", "out") if getattr(model, n, None) is not None)
    if hasattr(model, "head") and isinstance(getattr(model, "head"), nn.Module):
        return ("head",)
    return ()


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _tied(model: nn.Module) -> set[str]:
    """Linear layers whose weight is shared with another module (a tied output layer)."""
    seen: dict[int, str] = {}
    shared: set[int] = set()
    for name, m in model.named_modules(remove_duplicate=False):
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen and seen[id(p)] != f"{name}.{pname}":
                shared.add(id(p))
            seen.setdefault(id(p), f"{name}.{pname}")
    return {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m.weight) in shared}


TOKEN_EMBEDDINGS = ("bert.embed.tokens", "embed.tokens", "tok_embed")  # attnkit's BERT family, GPT and classifiers


def quantize_token_embedding(model: nn.Module, blocksize: int = 64) -> None:
    """Store the frozen token embedding table of ``model`` in NF4 (:class:`NF4Embedding`) and turn
    each linear layer tied to it into an :class:`NF4TiedLinear` reading the same quantized state.

    Raises:
        ConfigError: no token embedding, one that trains, or a width that is not whole blocks
            (each naming ``quantize_embeddings``).
    """
    name = next((n for n in TOKEN_EMBEDDINGS if isinstance(_find(model, n), nn.Embedding)), None)
    if name is None:
        raise ConfigError(f"quantize_embeddings=true: {type(model).__name__} has no token embedding "
                          f"({' or '.join(TOKEN_EMBEDDINGS)}); set quantize_embeddings=false")
    emb: nn.Embedding = model.get_submodule(name)  # type: ignore[assignment]
    if emb.weight.requires_grad:
        raise ConfigError(f"quantize_embeddings=true: the token embedding {name} trains (it is, or is tied to, a module "
                          "in modules_to_save); an NF4 table is frozen")
    if emb.embedding_dim % blocksize:
        raise ConfigError(f"quantize_embeddings=true: the token embedding {name} is {emb.embedding_dim} wide, not a "
                          f"multiple of the NF4 blocksize {blocksize}, so its rows are not whole blocks; "
                          "set quantize_embeddings=false (or a blocksize that divides the width)")
    tied = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.weight is emb.weight]
    q = NF4Embedding(emb, blocksize)
    _replace(model, name, q)
    for n, m in tied:
        _replace(model, n, NF4TiedLinear(q, m.bias))


def _find(model: nn.Module, name: str) -> nn.Module | None:
    try:
        return model.get_submodule(name)
    except AttributeError:
        return None


def freeze(model: nn.Module, keep: tuple[str, ...] = ()) -> None:
    """Freeze every parameter except those of the modules ``keep``."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name in keep:
        for p in model.get_submodule(name).parameters():
            p.requires_grad_(True)


def apply_lora(model: nn.Module, config: LoRAConfig) -> nn.Module:
    """Put LoRA (or DoRA, or QLoRA's NF4 base plus LoRA) on the layers ``config.targets`` name, in place.

    Every base parameter is frozen; the adapters and ``modules_to_save`` train.

    Args:
        model: a built model.
        config: the LoRA settings.

    Returns:
        ``model``, its chosen layers replaced by :class:`LoRALinear`.

    Raises:
        ConfigError: a target pattern that matches nothing, or a layer chosen twice.
    """
    keep = config.modules_to_save if config.modules_to_save is not None else head_modules(model)
    targets: list[Target] = select(model, config.targets, exclude=keep)
    freeze(model, keep)
    if config.quantize_embeddings:
        quantize_token_embedding(model, config.blocksize)
    if config.quantize == "nf4":
        skip = _tied(model)
        names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in skip
                 and not any(n == k or n.startswith(k + ".") for k in keep)]
        quantize_linears(model, names, config.blocksize)
    by_linear: dict[str, list[tuple[str, int, int]]] = {}
    for t in targets:
        by_linear.setdefault(t.linear, []).append((t.part, t.start, t.stop))
    for name, parts in by_linear.items():
        _replace(model, name, LoRALinear(model.get_submodule(name), parts, config))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge(model: nn.Module) -> None:
    """Merge every LoRA layer of ``model`` into its base weight (see :meth:`LoRALinear.merge`)."""
    for m in lora_layers(model).values():
        m.merge()


def unmerge(model: nn.Module) -> None:
    """Undo :func:`merge`."""
    for m in lora_layers(model).values():
        m.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every LoRA layer by a plain ``nn.Linear`` with the update folded in, every
    remaining NF4 layer by its dequantized ``nn.Linear`` and an NF4 token embedding by its
    dequantized ``nn.Embedding`` (fp32, tied again to its output layer); return ``model`` (all
    parameters trainable again)."""
    for name, m in lora_layers(model).items():
        _replace(model, name, m.merged_linear())
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, NF4Linear)]:
        lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device=m.packed.device)
        with torch.no_grad():
            lin.weight.copy_(m.dequantized(torch.float32))
            if m.bias is not None:
                lin.bias.copy_(m.bias)
        _replace(model, name, lin)
    tables: dict[int, nn.Embedding] = {}
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, NF4Embedding)]:
        emb = nn.Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx, device=m.packed.device)
        with torch.no_grad():
            emb.weight.copy_(m.dequantized(torch.float32))
        tables[id(m)] = emb
        _replace(model, name, emb)
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, NF4TiedLinear)]:
        lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None, device=m.embedding.packed.device)
        if id(m.embedding) in tables:
            lin.weight = tables[id(m.embedding)].weight  # tied again
        else:  # its table was replaced by other code: an untied copy
            with torch.no_grad():
                lin.weight.copy_(m.dequantized(torch.float32))
        if m.bias is not None:
            with torch.no_grad():
                lin.bias.copy_(m.bias)
        _replace(model, name, lin)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


__all__ = ["LoRAConfig", "LoRALinear", "apply_lora", "freeze", "head_modules", "lora_layers", "merge", "merge_and_unload",
           "quantize_token_embedding", "unmerge"]
