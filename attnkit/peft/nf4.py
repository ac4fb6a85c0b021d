"""4-bit NormalFloat weights with double quantization (Dettmers et al. 2023, QLoRA, section 3).

NF4 (section 3, "4-bit NormalFloat Quantization"): the 16 code values are quantiles of N(0, 1),
``q_i = Phi^-1(p_i)``, built asymmetrically so that zero is exactly representable: 8 positive
values from probabilities spaced evenly in ``[0.5, delta]`` and 7 negative ones in
``[1 - delta, 0.5]`` (``delta = 0.9677083`` as in the reference implementation), all divided by
the largest magnitude so the code spans ``[-1, 1]``. A weight matrix is flattened and cut into
blocks of 64; each block is divided by its absolute maximum (its *quantization constant*) and
each value replaced by the index of the nearest code value (decision boundaries halfway between
neighbouring codes). Two indices are packed per byte, the first in the high nibble.

Double quantization (section 3, "Double Quantization", equation 6): the fp32 constants of the
blocks are themselves quantized: their mean is subtracted (an offset kept in fp32), and the
centred constants are quantized blockwise (blocks of 256) to 8 bits with the signed dynamic
(tree) data type of Dettmers 2016, each block again scaled by its absolute maximum. This saves
``32/64 - (8/64 + 32/(64*256)) = 0.373`` bits per parameter.

The layout is that of ``bitsandbytes.functional.quantize_4bit(w, quant_type="nf4", blocksize=64,
compress_statistics=True)``: the packed 4-bit indices, the offset and the second-level scales are
byte-identical, and so are the 8-bit constants except where bitsandbytes's CPU kernel rounds a
constant lying next to a midpoint to the farther code value (here: always the nearest).
Dequantization is plain tensor indexing and multiplication: ``torch.compile`` turns
:func:`dequantize_nf4` followed by the matmul into fused kernels on a GPU.

The token embedding table can be stored the same way (:class:`NF4Embedding`, as bitsandbytes's
``Embedding4bit``; the paper quantizes the linear layers only). When the row width ``d`` is a
multiple of the blocksize, every row is a whole number of blocks, so a lookup gathers the packed
bytes and the 8-bit constants of the requested rows only and dequantizes those
(:func:`dequantize_nf4_rows`), with the same operations as the full table and so the same values.
An output layer tied to the table (:class:`NF4TiedLinear`) computes ``x @ dequant(E)^T`` from the
table's own quantized state, so no dense copy of ``E`` is kept between calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor, nn
from torch.nn import functional as F

NF4_OFFSET = 0.9677083  # the delta of the reference implementation: the outermost probability


# The 16 NF4 values as listed in the paper (appendix E), fp32: normal quantiles with an exact zero.
NF4_VALUES = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)


@cache
def nf4_code() -> Tensor:
    """The 16 NF4 values, sorted, fp32 (section 3; :func:`nf4_quantiles` recomputes them)."""
    return torch.tensor(NF4_VALUES, dtype=torch.float32)


def nf4_quantiles() -> Tensor:
    """NF4 from its definition: quantiles ``Phi^-1(p)`` of N(0, 1), 8 positive from ``p`` evenly in
    ``[0.5, delta]``, 7 negative from ``[1 - delta, 0.5]``, plus 0, scaled into ``[-1, 1]`` (fp64)."""
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    pos = normal.icdf(torch.linspace(NF4_OFFSET, 0.5, 9, dtype=torch.float64)[:-1])  # 8 positive quantiles
    neg = -normal.icdf(torch.linspace(NF4_OFFSET, 0.5, 8, dtype=torch.float64)[:-1])  # 7 negative quantiles
    values = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg])
    return (values / values.abs().max()).sort().values


@cache
def dynamic_code(max_exponent_bits: int = 7, total_bits: int = 8) -> Tensor:
    """The signed dynamic (tree) 8-bit data type of Dettmers 2016 ("8-Bit Approximations for Parallelism").

    Exponent ``i`` (``0 .. max_exponent_bits - 1``) contributes ``2^i`` mantissa values: the
    midpoints of ``2^i + 1`` points spaced evenly in ``[0.1, 1]``, times ``10^(i - 6)``, with
    both signs; then 0 and 1. Returns the 256 values sorted, fp32.
    """
    values: list[Tensor] = []
    for i in range(max_exponent_bits):
        bounds = torch.linspace(0.1, 1.0, 2**i + 1)  # fp32, as the reference
        means = (bounds[:-1] + bounds[1:]) / 2.0
        scale = 10.0 ** (-(max_exponent_bits - 1) + i)
        values += [scale * means, -scale * means]
    values += [torch.zeros(1), torch.ones(1)]
    code = torch.cat(values)
    code = torch.cat([code, torch.zeros(2**total_bits - code.numel())])
    return code.sort().values


def _blockwise_absmax(flat: Tensor, blocksize: int) -> tuple[Tensor, Tensor]:
    """``(scaled values in [-1, 1], per-block absolute maxima)``; a short last block keeps its own maximum."""
    n = flat.numel()
    full = n - n % blocksize
    blocks = flat[:full].view(-1, blocksize)  # (N_blocks, blocksize)
    absmax = blocks.abs().amax(dim=1)
    scaled = (blocks * (1.0 / absmax.clamp(min=1e-38))[:, None]).clamp(-1, 1).reshape(-1)
    if full < n:
        tail = flat[full:]
        am = tail.abs().max().clamp(min=1e-38)
        absmax = torch.cat([absmax, am[None]])
        scaled = torch.cat([scaled, (tail / am).clamp(-1, 1)])
    return scaled, absmax


def _nearest(scaled: Tensor, code: Tensor) -> Tensor:
    """Index of the nearest code value (boundaries halfway between sorted codes)."""
    return torch.bucketize(scaled, (code[:-1] + code[1:]) / 2)


@dataclass
class NF4Weight:
    """A weight in NF4 with double-quantized constants: everything needed to rebuild it.

    Attributes:
        packed: ``(ceil(n / 2), 1)`` uint8, two 4-bit code indices per byte (high nibble first).
        absmax: ``(n_blocks,)`` uint8 indices into :func:`dynamic_code` (the quantized constants).
        absmax2: ``(ceil(n_blocks / 256),)`` fp32 scale of each block of constants.
        offset: the mean subtracted from the constants before their quantization.
        shape: the original shape; ``dtype`` the original dtype.
    """

    packed: Tensor
    absmax: Tensor
    absmax2: Tensor
    offset: Tensor
    shape: torch.Size
    dtype: torch.dtype
    blocksize: int = 64
    blocksize2: int = 256

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.packed, self.absmax, self.absmax2, self.offset))


def quantize_nf4(w: Tensor, blocksize: int = 64, blocksize2: int = 256) -> NF4Weight:
    """Quantize ``w`` to NF4 with double quantization of its block constants (section 3).

    Args:
        w: a floating-point tensor (fp32, bf16 or fp16).
        blocksize: values per quantization constant (64 in the paper).
        blocksize2: constants per second-level constant (256 in the paper).

    Returns:
        The packed weight and its quantization state.
    """
    flat = w.detach().reshape(-1).float()
    scaled, absmax = _blockwise_absmax(flat, blocksize)
    if scaled.numel() % 2:
        scaled = F.pad(scaled, (0, 1))
    q = _nearest(scaled, nf4_code().to(flat.device)).to(torch.uint8)
    packed = ((q[::2] << 4) | q[1::2]).unsqueeze(1)  # (ceil(n/2), 1)
    offset = absmax.mean()
    scaled2, absmax2 = _blockwise_absmax(absmax - offset, blocksize2)
    qabs = _nearest(scaled2, dynamic_code().to(flat.device)).to(torch.uint8)
    return NF4Weight(packed, qabs, absmax2, offset, w.shape, w.dtype, blocksize, blocksize2)


def dequantize_absmax(q: NF4Weight, code: Tensor | None = None) -> Tensor:
    """The fp32 block constants: ``dynamic_code[absmax] * absmax2 + offset`` (equation 6's inner dequantization).

    ``code``: :func:`dynamic_code` already on the device (a layer keeps it as a buffer).
    """
    n = q.absmax.numel()
    code = dynamic_code().to(q.absmax.device) if code is None else code
    vals = code[q.absmax.long()]  # (n_blocks,)
    scale = q.absmax2.repeat_interleave(q.blocksize2)[:n]
    return vals * scale + q.offset


def dequantize_nf4(q: NF4Weight, dtype: torch.dtype | None = None, codes: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """The weight rebuilt from NF4: ``nf4_code[index] * constant`` per block, in ``dtype`` (default the original).

    ``codes``: ``(nf4_code, dynamic_code)`` already on the device (a layer keeps them as buffers,
    so a step copies nothing from the host and ``torch.compile`` sees plain tensors).
    """
    n = math.prod(q.shape)
    code4, code8 = codes if codes is not None else (nf4_code().to(q.packed.device), dynamic_code().to(q.packed.device))
    packed = q.packed.reshape(-1)
    idx = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)[:n].long()  # (n,)
    vals = code4[idx]
    absmax = dequantize_absmax(q, code8).repeat_interleave(q.blocksize)[:n]
    return (vals * absmax).view(q.shape).to(dtype or q.dtype)


def dequantize_nf4_rows(q: NF4Weight, rows: Tensor, dtype: torch.dtype | None = None,
                        codes: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Rows ``rows`` of a 2-D NF4 weight, dequantized without touching the other rows: equal to
    ``dequantize_nf4(q)[rows]`` (the same elementwise operations on the same values).

    Args:
        q: a quantized ``(V, d)`` table whose row width ``d`` is a multiple of ``q.blocksize``.
        rows: integer row indices, any shape ``S``.
        dtype: the result's dtype (default the original).
        codes: ``(nf4_code, dynamic_code)`` already on the device.

    Returns:
        ``(*S, d)``.
    """
    v, d = q.shape
    if d % q.blocksize:
        raise ValueError(f"row width {d} is not a multiple of the NF4 blocksize {q.blocksize}")
    nb = d // q.blocksize  # blocks per row
    code4, code8 = codes if codes is not None else (nf4_code().to(q.packed.device), dynamic_code().to(q.packed.device))
    rows = rows.long()
    packed = q.packed.view(v, d // 2)[rows]  # (*S, d/2)
    idx = torch.stack([packed >> 4, packed & 0x0F], dim=-1).flatten(-2).long()  # (*S, d), high nibble first
    blocks = rows[..., None] * nb + torch.arange(nb, device=rows.device)  # (*S, nb): the rows' block numbers
    absmax = code8[q.absmax[blocks].long()] * q.absmax2[blocks // q.blocksize2] + q.offset  # (*S, nb), equation 6
    vals = code4[idx].unflatten(-1, (nb, q.blocksize)) * absmax[..., None]  # (*S, nb, blocksize)
    return vals.flatten(-2).to(dtype or q.dtype)


class _NF4Stored(nn.Module):
    """A module holding one frozen matrix in NF4 with double quantization (section 3, equation 6) as
    buffers: the packed 4-bit codes, the 8-bit block constants with their second-level constants and
    offset, and the two code books (not saved: they are fixed)."""

    def _store(self, q: NF4Weight) -> None:
        """Register the tensors of ``q`` as buffers."""
        self.shape, self.orig_dtype, self.blocksize, self.blocksize2 = q.shape, q.dtype, q.blocksize, q.blocksize2
        self.register_buffer("packed", q.packed)
        self.register_buffer("absmax", q.absmax)
        self.register_buffer("absmax2", q.absmax2)
        self.register_buffer("offset", q.offset.reshape(()))
        self.register_buffer("code4", nf4_code().to(q.packed.device), persistent=False)
        self.register_buffer("code8", dynamic_code().to(q.packed.device), persistent=False)

    def quantized(self) -> NF4Weight:
        """The stored matrix as an :class:`NF4Weight` (the buffers themselves, not copies)."""
        return NF4Weight(self.packed, self.absmax, self.absmax2, self.offset, self.shape, self.orig_dtype, self.blocksize, self.blocksize2)

    def dequantized(self, dtype: torch.dtype | None = None) -> Tensor:
        """The whole matrix in ``dtype`` (default: the original dtype), a new tensor each time."""
        return dequantize_nf4(self.quantized(), dtype, (self.code4, self.code8))

    @property
    def weight(self) -> Tensor:
        """The dequantized matrix (a new tensor each time)."""
        return self.dequantized()


class NF4Linear(_NF4Stored):
    """A frozen linear layer whose weight is stored in NF4 (QLoRA's base layer, section 3, equation 5).

    ``forward(x) = x @ dequant(W)^T + b``, computed in the input's dtype (bf16 in QLoRA). The
    quantized tensors are buffers: nothing here trains; adapters go on top (:mod:`attnkit.peft.lora`).

    Args:
        linear: the layer to quantize (its weight is quantized, its bias kept as is, frozen).
        blocksize: values per quantization constant.
    """

    def __init__(self, linear: nn.Linear, blocksize: int = 64) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._store(quantize_nf4(linear.weight, blocksize))
        if linear.bias is not None:
            self.register_buffer("bias", linear.bias.detach().clone())
        else:
            self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        w = self.dequantized(x.dtype)  # (out, in)
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, w, b)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nf4 blocksize={self.blocksize}"


class NF4Embedding(_NF4Stored):
    """A frozen token embedding table stored in NF4 with double quantization (section 3's data type
    applied to the embedding, as bitsandbytes's ``Embedding4bit``).

    ``forward(ids) = dequant(E)[ids]``: only the gathered rows are dequantized
    (:func:`dequantize_nf4_rows`), in the table's original dtype. The quantized tensors are buffers.

    Args:
        embedding: the table to quantize; its width must be a multiple of ``blocksize`` so that
            each row is whole blocks.
        blocksize: values per quantization constant.

    Raises:
        ValueError: the width is not a multiple of ``blocksize``.
    """

    def __init__(self, embedding: nn.Embedding, blocksize: int = 64) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim
        if self.embedding_dim % blocksize:
            raise ValueError(f"embedding width {self.embedding_dim} is not a multiple of the NF4 blocksize {blocksize}")
        self.padding_idx = embedding.padding_idx
        self._store(quantize_nf4(embedding.weight, blocksize))

    def forward(self, ids: Tensor) -> Tensor:
        return dequantize_nf4_rows(self.quantized(), ids, None, (self.code4, self.code8))  # (*ids.shape, d)

    def nbytes(self) -> int:
        return self.quantized().nbytes()

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, nf4 blocksize={self.blocksize}"


class NF4TiedLinear(nn.Module):
    """An output layer tied to an :class:`NF4Embedding` (``W = E``, Press & Wolf 2017):
    ``forward(x) = x @ dequant(E)^T + b`` in the input's dtype.

    The table is referenced, not registered, so its buffers live (and move between devices) in one
    place and appear once in the state dict; the dense weight exists only during a call (and, when
    autograd needs it for the input's gradient, until the backward pass).

    Args:
        embedding: the quantized table.
        bias: the layer's bias (kept as a frozen buffer), or None.
    """

    def __init__(self, embedding: NF4Embedding, bias: Tensor | None = None) -> None:
        super().__init__()
        self._tied = (embedding,)  # a plain attribute: not a submodule
        self.in_features, self.out_features = embedding.embedding_dim, embedding.num_embeddings
        if bias is not None:
            self.register_buffer("bias", bias.detach().clone())
        else:
            self.bias = None

    @property
    def embedding(self) -> NF4Embedding:
        return self._tied[0]

    def dequantized(self, dtype: torch.dtype | None = None) -> Tensor:
        return self.embedding.dequantized(dtype)

    @property
    def weight(self) -> Tensor:
        """The dequantized table ``(V, d)`` (a new tensor each time)."""
        return self.dequantized()

    def forward(self, x: Tensor) -> Tensor:
        w = self.embedding.dequantized(x.dtype)  # (V, d), transient
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, w, b)  # (..., V)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tied to an NF4 embedding"


def quantize_linears(model: nn.Module, names: list[str], blocksize: int = 64) -> None:
    """Replace the ``nn.Linear`` modules ``names`` of ``model`` by :class:`NF4Linear` in place."""
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, NF4Linear(getattr(owner, child), blocksize))


__all__ = ["NF4Embedding", "NF4Linear", "NF4TiedLinear", "NF4Weight", "dequantize_nf4", "dequantize_nf4_rows", "dynamic_code", "nf4_code", "nf4_quantiles", "quantize_linears", "quantize_nf4"]
