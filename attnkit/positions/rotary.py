"""Rotary position embeddings (Su et al. 2021, RoFormer, section 3.4, eq. (34)) and context scaling.

Each pair of query/key features is rotated by an angle proportional to the token's position m:

    theta_i = base^(-2i / d_rot),  i = 0 .. d_rot/2 - 1
    (x'_a, x'_b) = (x_a cos(m theta_i) - x_b sin(m theta_i),  x_a sin(m theta_i) + x_b cos(m theta_i))

so that <R_m q, R_n k> depends on q, k and m - n only (eq. (16)): a relative position enters the
dot product without a bias. Keys are rotated before they enter a KV cache, so a decoding step
rotates only its new query and key at their absolute positions.

Two layouts pair the features differently (the same model, the q/k projection rows permuted):

* ``"interleaved"`` (the paper, Meta's Llama code): pairs ``(x_0, x_1), (x_2, x_3), ...``;
* ``"half"`` (GPT-NeoX, Hugging Face's Llama): pairs ``(x_i, x_{i + d_rot/2})`` ("rotate half").

:func:`interleaved_to_half` and :func:`half_to_interleaved` permute projection rows between them.

``rotary_dim`` < ``head_dim`` rotates only the first ``rotary_dim`` features of each head (GPT-NeoX's
partial rotary); the rest pass unchanged.

Context scaling (evaluating past the training length ``original_max_len``, by ``factor`` s):

* ``"linear"``: position interpolation (Chen et al. 2023, eq. (3)): m -> m / s, i.e. theta_i / s;
* ``"ntk"``: NTK-aware scaling (bloc97 2023, as restated in Peng et al. 2023, section 3.1):
  base -> base * s^(d_rot / (d_rot - 2)), so the lowest frequency is interpolated by s and the
  highest barely changes;
* ``"yarn"``: YaRN (Peng et al. 2023, section 3.2 "NTK-by-parts" and eq. (22)): frequencies whose
  wavelength fits fewer than ``beta_slow`` times in ``original_max_len`` are interpolated
  (theta_i / s), those fitting more than ``beta_fast`` times are kept, with a linear ramp between;
  the ramp is over the dimension index, with the boundaries rounded outwards, as in the authors'
  released code. cos and sin are multiplied by the attention temperature sqrt(1/t) = 0.1 ln(s) + 1,
  so every score is scaled by its square.
"""

from __future__ import annotations

import math
import weakref
from typing import Any, Literal

import torch
from torch import Tensor, nn

Layout = Literal["half", "interleaved"]
Scaling = Literal["linear", "ntk", "yarn"]


def inverse_frequencies(
    rotary_dim: int, base: float = 10000.0, scaling: Scaling | None = None, factor: float = 1.0,
    original_max_len: int = 2048, beta_fast: float = 32.0, beta_slow: float = 1.0,
) -> tuple[Tensor, float]:
    """The angles per position theta_i, ``(rotary_dim / 2,)`` float32, and the cos/sin multiplier.

    Args:
        rotary_dim: features rotated per head (even).
        base: the base theta of the frequencies (10000 in the paper).
        scaling: ``None``, ``"linear"``, ``"ntk"`` or ``"yarn"`` (see the module docstring).
        factor: the context extension s.
        original_max_len: the training context (YaRN's L).
        beta_fast, beta_slow: YaRN's ramp boundaries in rotations per ``original_max_len``.

    Returns:
        ``(theta, attention_factor)``; ``attention_factor`` multiplies cos and sin (1 except for YaRN).
    """
    d = rotary_dim
    if scaling == "ntk":
        base = base * factor ** (d / (d - 2))
    exponent = torch.arange(0, d, 2, dtype=torch.float64) / d  # 2i / d_rot
    theta = base ** (-exponent)  # (d/2,)
    if scaling == "linear":
        theta = theta / factor
    mscale = 1.0
    if scaling == "yarn":

        def dim_of(rotations: float) -> float:  # the dimension index 2i whose wavelength fits `rotations` times in L
            return d * math.log(original_max_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low = max(math.floor(dim_of(beta_fast)), 0)
        high = min(math.ceil(dim_of(beta_slow)), d - 1)
        high = high + 0.001 if high == low else high
        ramp = ((torch.arange(d // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)  # 0: keep, 1: interpolate
        theta = theta * (1 - ramp) + theta / factor * ramp
        mscale = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
    return theta.float(), mscale


_TABLES: dict[tuple, tuple[int, Tensor, Tensor, Tensor]] = {}
"""Contiguous-position tables shared by every :class:`RotaryEmbedding` with the same frequencies:
key -> (length, cos, sin, -sin), each ``(length, D)``."""

_EXPLICIT: list = []
"""The tables of the last explicit positions tensor: ``[(weakref, version, key, cos, sin, -sin)]`` (at most one),
so the layers of one forward pass share them."""


def _expand(cos: Tensor, sin: Tensor, head_dim: int, layout: Layout) -> tuple[Tensor, Tensor, Tensor]:
    """Per-feature tables ``(..., D)`` from ``cos, sin: (..., d_rot/2)``: ``C`` (1 past ``d_rot``), the signed
    ``S`` (0 past ``d_rot``) and ``-S``, so that eq. (34) reads ``x * C + swap(x) * S``."""
    if layout == "half":
        c, s = torch.cat((cos, cos), dim=-1), torch.cat((-sin, sin), dim=-1)  # feature i pairs with i +- d_rot/2
    else:
        c, s = cos.repeat_interleave(2, dim=-1), torch.stack((-sin, sin), dim=-1).flatten(-2)  # 2i pairs with 2i+1
    rest = head_dim - c.shape[-1]
    if rest:
        c = torch.cat((c, c.new_ones(*c.shape[:-1], rest)), dim=-1)
        s = torch.cat((s, s.new_zeros(*s.shape[:-1], rest)), dim=-1)
    return c, s, -s


def _swap(x: Tensor, rotary_dim: int, layout: Layout) -> Tensor:
    """Each rotated feature replaced by its partner (``x_{i + d_rot/2}`` <-> ``x_i`` or ``x_{2i+1}`` <-> ``x_{2i}``),
    the rest unchanged."""
    r, xr = rotary_dim // 2, x[..., :rotary_dim]
    if layout == "half":
        swapped = torch.cat((xr[..., r:], xr[..., :r]), dim=-1)
    else:
        swapped = xr.unflatten(-1, (r, 2)).flip(-1).flatten(-2)
    return swapped if rotary_dim == x.shape[-1] else torch.cat((swapped, x[..., rotary_dim:]), dim=-1)


def _rotate_into(x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int, layout: Layout) -> Tensor:
    """``x * C + swap(x) * S`` as one multiply and two in-place multiply-adds on the halves (the pairs' partners);
    on CPU in reduced precision, whose strided multiply-adds are not vectorised, one swap copy and one multiply-add."""
    out = x * cos  # (B, H, T, D); the features past d_rot are multiplied by 1
    r = rotary_dim // 2
    if not x.is_cuda and x.dtype != torch.float32:
        out[..., :rotary_dim].addcmul_(_swap(x[..., :rotary_dim], rotary_dim, layout), sin[..., :rotary_dim])
        return out
    if layout == "half":
        first, second = slice(0, r), slice(r, rotary_dim)
    else:
        first, second = slice(0, rotary_dim, 2), slice(1, rotary_dim, 2)
    out[..., first].addcmul_(x[..., second], sin[..., first])
    out[..., second].addcmul_(x[..., first], sin[..., second])
    return out


class _Rotation(torch.autograd.Function):
    """Eq. (34) with its backward as the inverse rotation: R_m is orthogonal, so the gradient is
    R_m^T g = R_{-m} g (``S`` replaced by ``-S``), the same three passes instead of autograd's slices and sums."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, cos: Tensor, sin: Tensor, neg_sin: Tensor, rotary_dim: int, layout: Layout) -> Tensor:
        ctx.save_for_backward(cos, neg_sin)
        ctx.rotary_dim, ctx.layout = rotary_dim, layout
        return _rotate_into(x, cos, sin, rotary_dim, layout)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        cos, neg_sin = ctx.saved_tensors
        return _rotate_into(grad, cos, neg_sin, ctx.rotary_dim, ctx.layout), None, None, None, None, None


class RotaryEmbedding(nn.Module):
    """Rotates queries and keys ``(B, H, T, D)`` by their positions (RoFormer, eq. (34)).

    The rotation is computed in eq. (34)'s elementwise form, ``x * C + swap(x) * S``, in ``x``'s dtype
    with the tables cast to it (as Hugging Face's Llama does), where ``C_j = cos(m theta_i)`` and
    ``S_j = -+sin(m theta_i)`` for the pair i that feature j belongs to (``C = 1``, ``S = 0`` past ``d_rot``).
    The tables of positions ``0 .. L-1`` are computed once per frequencies, device and dtype and shared by
    every layer; a contiguous range of positions (a cache offset) is a slice of them, explicit positions
    are computed for that tensor and shared by the layers that receive the same tensor.

    Args:
        head_dim: features per head D.
        rotary_dim: features rotated (even, at most D); ``None`` = all of them.
        base: base theta of the frequencies.
        layout: ``"half"`` (Hugging Face / GPT-NeoX) or ``"interleaved"`` (the paper / Meta).
        scaling: ``None``, ``"linear"``, ``"ntk"`` or ``"yarn"`` context scaling.
        factor: the scaling factor s (1 = none).
        original_max_len: the training context (used by YaRN).
        beta_fast, beta_slow: YaRN's ramp boundaries.
    """

    def __init__(
        self, head_dim: int, rotary_dim: int | None = None, base: float = 10000.0, layout: Layout = "half",
        scaling: Scaling | None = None, factor: float = 1.0, original_max_len: int = 2048,
        beta_fast: float = 32.0, beta_slow: float = 1.0,
    ) -> None:
        super().__init__()
        rd = head_dim if rotary_dim is None else rotary_dim
        if rd <= 0 or rd % 2 or rd > head_dim:
            raise ValueError(f"rotary_dim={rotary_dim!r} must be even, positive and at most head_dim={head_dim}")
        if layout not in ("half", "interleaved"):
            raise ValueError(f"layout={layout!r} is not one of 'half', 'interleaved'")
        if scaling not in (None, "linear", "ntk", "yarn"):
            raise ValueError(f"scaling={scaling!r} is not one of None, 'linear', 'ntk', 'yarn'")
        if not factor >= 1.0:
            raise ValueError(f"factor={factor!r} must be at least 1")
        if not base > 1.0:
            raise ValueError(f"base={base!r} must be greater than 1")
        self.head_dim, self.rotary_dim, self.layout, self.scaling, self.factor = head_dim, rd, layout, scaling, factor
        theta, self.attention_factor = inverse_frequencies(rd, base, scaling, factor, original_max_len, beta_fast, beta_slow)
        self.register_buffer("theta", theta, persistent=False)  # (d_rot/2,)
        self._frequencies: tuple[int, tuple[float, ...]] = (-1, ())  # (theta._version, theta's values) of the cache key

    def table_key(self, device: torch.device, dtype: torch.dtype) -> tuple:
        """What the tables depend on: the frequencies (scaling included), the multiplier, the layout and widths."""
        version = self.theta._version
        if self._frequencies[0] != version or len(self._frequencies[1]) != self.theta.numel():
            self._frequencies = (version, tuple(self.theta.tolist()))
        return (self._frequencies[1], self.attention_factor, self.head_dim, self.rotary_dim, self.layout, str(device), dtype)

    def cos_sin(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin of m theta_i for ``positions: (T,)`` or ``(B, T)``: each ``(1 or B, 1, T, d_rot/2)``."""
        pos = positions if positions.dim() == 2 else positions[None]  # (B or 1, T)
        angle = pos[:, None, :, None].to(torch.float32) * self.theta.to(pos.device)  # (B, 1, T, d_rot/2)
        return (angle.cos() * self.attention_factor).to(dtype), (angle.sin() * self.attention_factor).to(dtype)

    def tables(self, positions: Tensor | int, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``(C, S, -S)`` of :meth:`rotate`, ``(T, D)`` for the positions ``offset .. offset + length - 1`` when
        ``positions`` is the int offset, else ``(1 or B, 1, T, D)`` for the explicit ``positions: (T,)`` or ``(B, T)``."""
        if torch.compiler.is_compiling():  # no Python-side cache inside a compiled graph
            pos = torch.arange(positions, positions + length, device=device) if isinstance(positions, int) else positions
            return _expand(*self.cos_sin(pos.to(device), dtype), self.head_dim, self.layout)  # type: ignore[arg-type]
        with torch.inference_mode(False):  # tables made under inference mode are also saved for a later backward
            return self._cached_tables(positions, length, device, dtype)

    def _cached_tables(self, positions: Tensor | int, length: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        key = self.table_key(device, dtype)
        if isinstance(positions, int):
            end = positions + length
            entry = _TABLES.get(key)
            if entry is None or entry[0] < end:
                n = max(end, 2 * entry[0]) if entry is not None else end
                if len(_TABLES) >= 32:
                    _TABLES.clear()
                entry = (n, *_expand(*self.cos_sin(torch.arange(n, device=device), dtype), self.head_dim, self.layout))
                entry = (n, entry[1][0, 0], entry[2][0, 0], entry[3][0, 0])  # (n, D) each
                _TABLES[key] = entry
            return entry[1][positions:end], entry[2][positions:end], entry[3][positions:end]
        last = _EXPLICIT[0] if _EXPLICIT else None
        if last is not None and last[0]() is positions and last[1] == positions._version and last[2] == key:
            return last[3], last[4], last[5]
        tables = _expand(*self.cos_sin(positions.to(device), dtype), self.head_dim, self.layout)
        _EXPLICIT[:] = [(weakref.ref(positions), positions._version, key, *tables)]
        return tables

    def rotate(self, x: Tensor, cos: Tensor, sin: Tensor, neg_sin: Tensor | None = None) -> Tensor:
        """``x: (B, H, T, D)`` rotated by the tables ``(C, S, -S)`` of :meth:`tables`: ``x * C + swap(x) * S``.

        Args:
            x: queries or keys.
            cos, sin: ``C`` and ``S`` broadcastable to ``x``.
            neg_sin: ``-S`` (the backward's inverse rotation); computed when omitted.

        Returns:
            The rotated ``x``, same shape and dtype.
        """
        if torch.compiler.is_compiling():  # one elementwise expression for the compiler to fuse
            return x * cos + _swap(x, self.rotary_dim, self.layout) * sin
        return _Rotation.apply(x, cos, sin, -sin if neg_sin is None else neg_sin, self.rotary_dim, self.layout)

    def forward(self, q: Tensor, k: Tensor, positions: Tensor | int = 0) -> tuple[Tensor, Tensor]:
        """Rotate ``q: (B, H, T, D)`` and ``k: (B, H_kv, T, D)`` (any number of key heads).

        Args:
            q: queries of this step.
            k: keys of this step (rotated before they are cached).
            positions: the int offset of a contiguous range ``offset .. offset + T - 1`` (e.g. a cache's
                length), or integer positions ``(T,)`` (the same for every row) or ``(B, T)`` (per row,
                e.g. counted past left padding).

        Returns:
            The rotated ``(q, k)``, same shapes and dtype.
        """
        cos, sin, neg_sin = self.tables(positions, q.shape[-2], q.device, q.dtype)
        return self.rotate(q, cos, sin, neg_sin), self.rotate(k, cos, sin, neg_sin)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, rotary_dim={self.rotary_dim}, layout={self.layout!r}, scaling={self.scaling}, factor={self.factor}"


def _permutation(head_dim: int, rotary_dim: int, to_half: bool) -> Tensor:
    """Row order within one head: the half-layout row j takes interleaved row perm[j] (or the inverse)."""
    r = rotary_dim // 2
    interleaved_of_half = torch.cat((torch.arange(0, rotary_dim, 2), torch.arange(1, rotary_dim, 2)))  # half row j <- interleaved row
    perm = interleaved_of_half if to_half else torch.argsort(interleaved_of_half)
    assert perm.shape[0] == 2 * r
    return torch.cat((perm, torch.arange(rotary_dim, head_dim)))


def _permute_rows(w: Tensor, n_heads: int, rotary_dim: int | None, to_half: bool) -> Tensor:
    if w.shape[0] % n_heads:
        raise ValueError(f"{w.shape[0]} rows do not split into n_heads={n_heads}")
    head_dim = w.shape[0] // n_heads
    perm = _permutation(head_dim, head_dim if rotary_dim is None else rotary_dim, to_half).to(w.device)
    rows = (torch.arange(n_heads, device=w.device)[:, None] * head_dim + perm).flatten()  # (n_heads * head_dim,)
    return w.index_select(0, rows)


def interleaved_to_half(w: Tensor, n_heads: int, rotary_dim: int | None = None) -> Tensor:
    """Permute the rows of a q or k projection (weight ``(n_heads * D, d_in)`` or bias ``(n_heads * D,)``)
    from the interleaved layout to the half layout: the conversion of Meta Llama checkpoints to Hugging Face's.

    Args:
        w: the projection's weight or bias, heads stacked along the rows.
        n_heads: heads in ``w`` (key/value heads for a grouped k projection).
        rotary_dim: rotated features per head (default: all); later rows stay in place.

    Returns:
        ``w`` with rows permuted so that the half layout's rotation gives the same scores.
    """
    return _permute_rows(w, n_heads, rotary_dim, to_half=True)


def half_to_interleaved(w: Tensor, n_heads: int, rotary_dim: int | None = None) -> Tensor:
    """The inverse of :func:`interleaved_to_half` (Hugging Face rows to Meta's).

    Args:
        w: the projection's weight or bias, heads stacked along the rows.
        n_heads: heads in ``w``.
        rotary_dim: rotated features per head (default: all).

    Returns:
        ``w`` with rows in the interleaved layout.
    """
    return _permute_rows(w, n_heads, rotary_dim, to_half=False)
