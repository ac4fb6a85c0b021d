"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), eqs. (4)-(6) and (16)-(20).

    out_i = phi(q_i)^T S / (phi(q_i)^T z),   S = sum_j phi(k_j) v_j^T,   z = sum_j phi(k_j),
    phi(x) = elu(x) + 1,

with the sums over every visible key j (over ``j <= i`` when causal, bottom-right aligned).

* Non-causal: ``S`` and ``z`` once, then one product per query: O(n d d_v). Eager (the CPU,
  or ``compiled=False``) with phi = elu + 1 this is :class:`NonCausal`, an autograd Function of
  two matrix products forward and four backward: ``V`` carries a column of ones, so ``z`` and
  the denominators come out of the same products. On CUDA the compiled generic path stays the
  default: the Function's eager operations cost host time that the compiled path does not.
* Causal: the prefix sums of section 3.3, computed in chunks of ``chunk`` positions: within a
  chunk a small masked ``(C, C)`` product, across chunks the running ``S``/``z`` (only one
  ``(d, d_v)`` state per chunk is kept, not one per position).
* Half-precision inputs are summed in float32 and the output cast back.
* Decoding: :meth:`LinearAttention.step` advances a fixed-size :class:`LinearState` by one
  token (eq. (18)-(20)), so token n costs the same as token 1.

Masks: key-padding masks ``(B, 1, 1, Tk)`` (and ``causal``) take the fast path; any other mask
uses the dense reference path (the same formula with ``allowed`` weights ``phi(q_i)^T phi(k_j)``).
There is no softmax, so an additive score ``bias`` has no meaning here and is refused.
Rows with no visible key give zeros. No 1/sqrt(d) scale, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention import graphed
from attnkit.attention.base import AttentionKernel, repeat_kv
from attnkit.attention.registry import register


SPLIT = 256  # rows per partial sum over positions (see LinearAttention._non_causal)


def phi(x: Tensor) -> Tensor:
    """The feature map elu(x) + 1 (section 3.2.1), positive everywhere."""
    return F.elu(x) + 1.0


def _safe(den: Tensor) -> Tensor:
    return torch.where(den > 0, den, torch.ones_like(den))


@dataclass
class LinearState:
    """The recurrent state of causal linear attention: ``s: (B, H, D, Dv)``, ``z: (B, H, D)``, ``t`` tokens seen."""

    s: Tensor
    z: Tensor
    t: int = 0


@register("linear")
class LinearAttention(AttentionKernel):
    """phi(Q) (phi(K)^T V) normalised by phi(Q) phi(K)^T 1, phi = elu + 1.

    Args:
        dropout: must be 0 (there are no weights to drop on the fast path).
        chunk: positions per chunk of the causal prefix sums.
        compiled: on CUDA, run the fast path through ``torch.compile`` (one compiled function per
            kernel class): eager, its dozens of small kernels cost more than the arithmetic below
            about 16k positions. A string is a ``torch.compile`` mode, e.g. ``"reduce-overhead"``
            (CUDA graphs: outputs are overwritten by the next call; clone what you keep).
            Applies to the causal path (and to feature maps other than elu + 1).
        function: eager non-causal attention through :class:`NonCausal`; False runs it on the
            same path as the causal kind. Compiled calls (CUDA with ``compiled``, or inside a
            compiled model) take the generic path, which inductor fuses.
        cuda_graphs: on CUDA, calls without a mask replay the compiled call's forward and
            backward as CUDA graphs captured per input signature
            (:class:`~attnkit.attention.graphed.GraphedCall`): below ~16k positions the compiled
            call's Python layers take longer than its GPU work.
    """

    def __init__(
        self, dropout: float = 0.0, chunk: int = 64, compiled: bool | str = True, function: bool = True, cuda_graphs: bool = False,
    ) -> None:
        super().__init__(dropout)
        for name, flag in (("function", function), ("cuda_graphs", cuda_graphs)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}={flag!r} must be True or False")
        self.function = function
        self.cuda_graphs = cuda_graphs
        if not isinstance(compiled, (bool, str)) or compiled == "":
            raise ValueError(f"compiled={compiled!r} must be True, False or a torch.compile mode")
        self.compiled = compiled
        if dropout:
            raise ValueError(f"dropout={dropout!r}: linear attention has no weight matrix to drop; use 0.0")
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk={chunk!r} must be a positive integer")
        self.chunk = chunk

    # -- the feature map ----------------------------------------------------------------------
    def features(self, x: Tensor, is_query: bool) -> Tensor:
        """The positive feature map of queries or keys ``(..., D) -> (..., M)``; here elu + 1."""
        return phi(x)

    # -- reference path (need_weights, arbitrary masks) ------------------------------------
    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return torch.matmul(self.features(q, True), self.features(k, False).transpose(-2, -1))  # (B, H, Tq, Tk), all > 0

    def normalize(self, scores: Tensor, allowed: Tensor | None) -> Tensor:
        w = scores if allowed is None else scores * allowed
        return w / _safe(w.sum(dim=-1, keepdim=True))

    def weights(self, q: Tensor, k: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None, causal: bool = False) -> Tensor:
        if bias is not None:
            raise ValueError("linear attention takes no score bias (it has no softmax to add it to)")
        if q.dtype in (torch.float16, torch.bfloat16):  # normalise in float32, as the fast path does
            return super().weights(q.float(), k.float(), mask=mask, causal=causal).to(q.dtype)
        return super().weights(q, k, mask=mask, causal=causal)

    # -- fast paths --------------------------------------------------------------------------
    def fast(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, bias: Tensor | None, causal: bool) -> Tensor | None:
        if bias is not None:
            raise ValueError("linear attention takes no score bias (it has no softmax to add it to)")
        if mask is not None and not (mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1):
            return None  # a general mask: the dense reference path
        if q.shape[-2] == 0 or k.shape[-2] == 0:
            return q.new_zeros(*q.shape[:-1], v.shape[-1])
        if q.is_cuda and self.compiled and not torch.compiler.is_compiling():
            fn = _compiled(type(self), None if self.compiled is True else self.compiled)
            if self.cuda_graphs and mask is None:
                return graphed.run(graphed.cache_for(self), (causal,), lambda q, k, v: fn(self, q, k, v, None, causal), q, k, v)
            return fn(self, q, k, v, mask, causal)
        if not causal and self.function and not torch.compiler.is_compiling() and type(self).features is LinearAttention.features:
            return NonCausal.apply(q, k, v, mask)
        return self._compute(q, k, v, mask, causal)

    def _compute(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
        """The fast path's arithmetic (eager on the CPU, compiled into a few fused kernels on CUDA)."""
        dtype = v.dtype
        if dtype in (torch.float16, torch.bfloat16):  # sums over many keys: accumulate in float32
            q, k, v = q.float(), k.float(), v.float()
        fq, fk = self.features(q, True), self.features(k, False)  # (B, H, T, M)
        if mask is not None:
            keep = mask[:, :, 0, :, None].to(fk.dtype)  # (B|1, 1, Tk, 1)
            fk, v = fk * keep, v * keep
        if not causal:
            return self._non_causal(fq, fk, v).to(dtype)
        return self._causal(fq, fk, v).to(dtype)

    def _non_causal(self, fq: Tensor, fk: Tensor, v: Tensor) -> Tensor:
        """``phi(Q) S / phi(Q) z``; beyond ``2 * SPLIT`` positions the sums over positions are
        taken as partial sums of ``SPLIT`` rows, forward and backward: a product summed over
        all n rows gives a GPU one output tile per head (a dozen thread blocks for 12 heads),
        the partial products one per ``SPLIT`` rows."""
        tq, tk = fq.shape[-2], fk.shape[-2]
        if tk >= 2 * SPLIT:
            n = -(-tk // SPLIT)
            fkc, vc = (F.pad(x, (0, 0, 0, n * SPLIT - tk)).unflatten(2, (n, SPLIT)) for x in (fk, v))  # zero rows add nothing
            s = torch.einsum("bhncd,bhnce->bhnde", fkc, vc).sum(dim=2)  # (B, H, D, Dv)
        else:
            s = torch.einsum("bhjd,bhje->bhde", fk, v)  # (B, H, D, Dv)
        z = fk.sum(dim=2)  # (B, H, D)
        if tq >= 2 * SPLIT:  # the backward's sum over queries (the gradient of S) likewise, through an expanded S
            n = -(-tq // SPLIT)
            fqc = F.pad(fq, (0, 0, 0, n * SPLIT - tq)).unflatten(2, (n, SPLIT))  # (B, H, N, SPLIT, D)
            num = torch.matmul(fqc, s[:, :, None].expand(-1, -1, n, -1, -1)).flatten(2, 3)[:, :, :tq]
        else:
            num = torch.einsum("bhid,bhde->bhie", fq, s)
        den = torch.einsum("bhid,bhd->bhi", fq, z)[..., None]
        return num / _safe(den)

    def _causal(self, fq: Tensor, fk: Tensor, v: Tensor) -> Tensor:
        """Causal prefix sums in chunks; queries bottom-right aligned to the keys."""
        tq, tk = fq.shape[-2], fk.shape[-2]
        if tq < tk:  # earlier positions have no query: pad them, drop them after
            fq = F.pad(fq, (0, 0, tk - tq, 0))
        elif tq > tk:  # the first queries precede every key: pad keys that count for nothing
            fk, v = F.pad(fk, (0, 0, tq - tk, 0)), F.pad(v, (0, 0, tq - tk, 0))
        b, h, t, d = fq.shape
        c = self.chunk
        n = -(-t // c)
        pad = n * c - t
        fq, fk, v = (F.pad(x, (0, 0, 0, pad)) for x in (fq, fk, v))  # zero keys add nothing
        fq, fk, v = (x.reshape(b, h, n, c, x.shape[-1]) for x in (fq, fk, v))  # (B, H, N, C, .)
        kv = torch.einsum("bhncd,bhnce->bhnde", fk, v)  # per-chunk sums (B, H, N, D, Dv)
        s_before = torch.cumsum(kv, dim=2) - kv  # exclusive prefix: the chunks before
        z_chunk = fk.sum(dim=3)  # (B, H, N, D)
        z_before = torch.cumsum(z_chunk, dim=2) - z_chunk
        tri = torch.ones(c, c, dtype=torch.bool, device=fq.device).tril()
        a = torch.einsum("bhnid,bhnjd->bhnij", fq, fk) * tri  # within-chunk, j <= i
        num = torch.einsum("bhnid,bhnde->bhnie", fq, s_before) + torch.matmul(a, v)
        den = torch.einsum("bhnid,bhnd->bhni", fq, z_before) + a.sum(-1)
        out = (num / _safe(den)[..., None]).reshape(b, h, n * c, -1)[:, :, :t]
        return out[:, :, t - tq :]

    # -- recurrent decoding ------------------------------------------------------------------
    def init_state(self, batch: int, n_heads: int, head_dim: int, v_dim: int | None = None, *, device=None, dtype=None) -> LinearState:
        """An empty state (no token seen); ``head_dim`` is the size of the features (D for elu + 1)."""
        dv = head_dim if v_dim is None else v_dim
        return LinearState(
            s=torch.zeros(batch, n_heads, head_dim, dv, device=device, dtype=dtype),
            z=torch.zeros(batch, n_heads, head_dim, device=device, dtype=dtype),
        )

    def step(self, q: Tensor, k: Tensor, v: Tensor, state: LinearState) -> tuple[Tensor, LinearState]:
        """One causal decoding step (eqs. (18)-(20)): ``q, k: (B, H, 1, D)``, ``v: (B, H, 1, Dv)``.

        Returns ``(out: (B, H, 1, Dv), new state)``; the state's size never grows.
        """
        fq, fk = self.features(q[:, :, 0], True), self.features(k[:, :, 0], False)  # (B, H, M)
        s = state.s + fk[..., :, None] * v[:, :, 0, None, :]  # (B, H, M, Dv)
        z = state.z + fk  # (B, H, M)
        num = torch.einsum("bhd,bhde->bhe", fq, s)
        den = (fq * z).sum(-1, keepdim=True)
        return (num / _safe(den))[:, :, None], LinearState(s, z, state.t + 1)

    def extra_repr(self) -> str:
        return f"chunk={self.chunk}"


class NonCausal(torch.autograd.Function):
    """Non-causal linear attention, phi = elu + 1, with a hand-written backward (eqs. (4)-(6)).

    With ``V1 = [V, 1]`` (a column of ones) and ``S1 = phi(K)^T V1 = [S, z]``, the forward is
    ``N1 = phi(Q) S1 = [num, den]`` and ``out = num / den``. Backward, with ``G`` the gradient of
    ``out``: ``G1 = [G / den, -rowsum(G * out) / den]``, then ``dphi(Q) = G1 S1^T``,
    ``dS1 = phi(Q)^T G1``, ``dphi(K) = V1 dS1^T``, ``dV = phi(K) dS[:, :Dv]``, and
    ``phi'(x) = min(phi(x), 1)`` (1 above zero, exp(x) = phi(x) below). Half-precision inputs
    are computed in float32. ``keep``: a key-padding mask ``(B|1, 1, 1, Tk)`` or None; a row
    with no visible key gives zeros.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, keep: Tensor | None) -> Tensor:  # type: ignore[override]
        dtype = v.dtype
        acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        fq, fk = phi(q.to(acc)), phi(k.to(acc))  # (B, H, Tq, D), (B, H, Tk, D)
        v1 = torch.cat([v.to(acc), fk.new_ones(*v.shape[:-1], 1)], dim=-1)  # (B, H, Tk, Dv + 1)
        if keep is not None:
            w = keep[:, :, 0, :, None].to(acc)  # (B|1, 1, Tk, 1)
            fk, v1 = fk * w, v1 * w
        s1 = fk.transpose(-2, -1) @ v1  # [S, z]: (B, H, D, Dv + 1)
        n1 = fq @ s1  # [num, den]: (B, H, Tq, Dv + 1)
        den = n1[..., -1:].masked_fill(n1[..., -1:] == 0, 1.0)  # no visible key: 0 / 1
        out = n1[..., :-1] / den
        ctx.save_for_backward(fq, fk, v1, s1, out, den)
        ctx.dtypes = (q.dtype, k.dtype, dtype)
        return out.to(dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:  # type: ignore[override]
        fq, fk, v1, s1, out, den = ctx.saved_tensors
        gn = g.to(out.dtype) / den
        g1 = torch.cat([gn, -(gn * out).sum(-1, keepdim=True)], dim=-1)  # (B, H, Tq, Dv + 1)
        ds1 = fq.transpose(-2, -1) @ g1  # (B, H, D, Dv + 1)
        dq = (g1 @ s1.transpose(-2, -1)) * fq.clamp(max=1.0)
        dk = (v1 @ ds1.transpose(-2, -1)) * fk.clamp(max=1.0)  # masked keys: v1 rows are 0, so dk is 0
        dv = fk @ ds1[..., :-1]
        qt, kt, vt = ctx.dtypes
        return dq.to(qt), dk.to(kt), dv.to(vt), None


_COMPILED: dict[tuple, Callable[..., Tensor]] = {}


def _compiled(cls: type, mode: str | None) -> Callable[..., Tensor]:
    """``cls._compute`` under ``torch.compile`` (``mode``), built once per kernel class and mode."""
    if (cls, mode) not in _COMPILED:
        _COMPILED[(cls, mode)] = torch.compile(cls._compute, mode=mode)
    return _COMPILED[(cls, mode)]


class RecurrentCache:
    """The self-attention "cache" of a linear-attention layer: its fixed-size state, not past keys.

    Katharopoulos et al. 2020, section 3.4: causal linear attention is an RNN whose state is
    ``S = sum_j phi(k_j) v_j^T`` and ``z = sum_j phi(k_j)``. The first call (the prompt, any
    length) runs the parallel causal form and sums its real keys into the state; every later
    call advances the state one token at a time (:meth:`LinearAttention.step`). Memory is
    ``(B, H, M, Dv)`` whatever the position and token n costs what token 1 does. The state is
    kept in float32 for half-precision models. ``length`` counts the positions seen, padding
    included (it plays :class:`~attnkit.attention.cache.KVCache`'s part for positions).
    """

    def __init__(self) -> None:
        self.state: LinearState | None = None
        self.length = 0

    def update(
        self, kernel: nn.Module, q: Tensor, new_kv: Callable[[], tuple[Tensor, Tensor]], *, mask: Tensor | None = None,
        bias: Tensor | None = None, causal: bool = False, need_weights: bool = False,
    ) -> Tensor:
        """The :class:`~attnkit.attention.cache.AttentionCache` protocol: advance the state by this
        step's keys/values and return the outputs; only causal linear attention (no score bias, no
        weights) has such a state."""
        if not causal or bias is not None or need_weights or not isinstance(kernel, LinearAttention):
            raise ValueError("a RecurrentCache serves causal linear-attention layers only (no bias, no weights)")
        k, v = new_kv()
        h = q.shape[-3]  # grouped-query attention: the state is per query head
        return self.attend(kernel, q, repeat_kv(k, h), repeat_kv(v, h), mask)

    def attend(self, kernel: LinearAttention, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Outputs ``(B, H, T, Dv)`` for ``T`` new positions (causal); ``mask``: key padding ``(B|1, 1, 1, T)`` or None.

        After the prompt, masks may only mark every new position as real (padding belongs to
        the left of the prompt).
        """
        if mask is not None and not (mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[2] == 1):
            raise ValueError("a recurrent (linear-attention) cache takes only a key-padding mask (B, 1, 1, T)")
        dtype, t = v.dtype, q.shape[-2]
        if self.state is None:
            keep = None if mask is None else mask[..., -t:]  # (B|1, 1, 1, T): this call's keys
            out = kernel(q, k, v, mask=keep, causal=True)  # (B, H, T, Dv)
            # Key features as step() makes them, one (B*H, T, D) batch: no stabiliser shared over
            # the prompt's keys (FAVOR+), so the prompt's state and later keys are on one scale.
            fk = kernel.features(k.float().flatten(0, 1), False).unflatten(0, k.shape[:2])  # (B, H, T, M)
            vf = v.float()  # (B, H, T, Dv)
            if keep is not None:
                w = keep[:, :, 0, :, None].to(fk.dtype)  # (B|1, 1, T, 1)
                fk, vf = fk * w, vf * w
            self.state = LinearState(s=torch.einsum("bhtm,bhte->bhme", fk, vf), z=fk.sum(dim=2), t=t)
            self.length = t
            return out
        outs = []
        for i in range(t):  # one token at a time: eqs. (18)-(20)
            o, self.state = kernel.step(q[:, :, i : i + 1].float(), k[:, :, i : i + 1].float(), v[:, :, i : i + 1].float(), self.state)
            outs.append(o)
        self.length += t
        return torch.cat(outs, dim=2).to(dtype)  # (B, H, T, Dv)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index``."""
        if self.state is not None:
            self.state = LinearState(self.state.s.index_select(0, index), self.state.z.index_select(0, index), self.state.t)

    def nbytes(self) -> int:
        """Bytes the state holds (constant once the prompt is in)."""
        return 0 if self.state is None else self.state.s.nbytes + self.state.z.nbytes
