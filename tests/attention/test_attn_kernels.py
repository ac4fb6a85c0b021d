"""Every registered attention kernel against a naive O(T^2) reference written here.

The references are written out with ``einsum`` and explicit masks built by loops, in
float64, and share nothing with the library's ``masked_softmax``/``combine``:

* ``scaled_dot`` / ``dot``: softmax(Q K^T * scale + bias) V (Vaswani et al. 2017, eq. (1));
* ``relu``: ReLU(Q K^T / sqrt(d) + bias) * mask / (number of visible keys) V;
* ``additive``: softmax(v^T tanh(W_q q + W_k k) + bias) V (Bahdanau et al. 2015), using the
  kernel's own parameters;
* the sparse patterns (``sliding_window``, ``dilated_window``, ``global_window``, ``strided``,
  ``fixed``, ``bigbird`` without random blocks): the scaled-dot reference with the pattern's mask
  built from the literal predicates in ``sparse_reference``;
* ``linear``: phi(Q) phi(K)^T masked and row-normalised, phi = elu + 1 (Katharopoulos et al. 2020);
* ``lsh`` with one bucket and one chunk: softmax over unit-normalised keys without self (Kitaev et al. 2020);
* ``routing``: softmax within the clusters of the kernel's centroids, routed here (Roy et al. 2021);
* ``performer``: linear attention with FAVOR+ features built here from the kernel's projection;
* ``linformer``: softmax(Q (E K)^T / sqrt(d)) F with the kernel's E and F (key-padding masks only).

Kernels registered later without a reference here are skipped with a reason, so adding a
kernel shows up in the test report rather than silently passing.
"""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import attnkit.attention as A
import sparse_reference as sref
from attnkit.attention.registry import register

MASKS = ["none", "padding", "random", "causal", "causal+padding"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# (rtol, atol) for outputs/weights and for gradients, per dtype.
TOL = {
    torch.float64: ((1e-10, 1e-10), (1e-9, 1e-9)),
    torch.float32: ((1e-4, 1e-5), (1e-3, 1e-4)),
    torch.bfloat16: ((5e-2, 5e-2), (None, 1e-2)),
}
NONSMOOTH = {"relu"}  # kernels whose weights have a kink in the scores
SETTINGS = settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])



# -- references ------------------------------------------------------------------------
def allowed_mask(kind: str, b: int, h: int, tq: int, tk: int, lengths: list[int], gen: torch.Generator) -> Tensor | None:
    """The dense ``(B, H, Tq, Tk)`` boolean mask (True = may attend) built entry by entry."""
    if kind == "none":
        return None
    allowed = torch.ones(b, h, tq, tk, dtype=torch.bool)
    if kind == "random":
        allowed = torch.rand(b, h, tq, tk, generator=gen) < 0.6
        allowed[0, 0, 0, :] = False  # at least one row with no visible key
    for bi in range(b):
        for i in range(tq):
            for j in range(tk):
                if "padding" in kind and j >= lengths[bi]:
                    allowed[bi, :, i, j] = False
                if "causal" in kind and j > i + tk - tq:  # bottom-right aligned
                    allowed[bi, :, i, j] = False
    return allowed


def user_mask(kind: str, allowed: Tensor | None, lengths: list[int], tk: int) -> tuple[Tensor | None, bool]:
    """What the kernel is given for ``kind``: a mask in its natural (broadcast) shape and ``causal``."""
    causal = "causal" in kind
    if "padding" in kind:
        keep = torch.tensor([[j < n for j in range(tk)] for n in lengths])  # (B, Tk)
        return keep[:, None, None, :], causal  # (B, 1, 1, Tk)
    if kind == "random":
        return allowed, False
    return None, causal


def softmax_weights(scores: Tensor, allowed: Tensor | None) -> Tensor:
    """Softmax over the allowed keys; rows with none allowed are all zero."""
    if allowed is None:
        allowed = torch.ones_like(scores, dtype=torch.bool)
    row_max = torch.where(allowed, scores, torch.full_like(scores, -math.inf)).amax(-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max)).detach()
    e = torch.exp(torch.where(allowed, scores - row_max, torch.full_like(scores, -math.inf)))
    denom = e.sum(-1, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))


def ref_scaled_dot(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    scale = 1.0 / math.sqrt(q.shape[-1]) if kernel.kind == "scaled_dot" else 1.0
    s = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    return softmax_weights(s if bias is None else s + bias, allowed)


def ref_relu(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    s = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
    s = s if bias is None else s + bias
    if allowed is None:
        allowed = torch.ones_like(s, dtype=torch.bool)
    count = allowed.sum(-1, keepdim=True).to(s.dtype)
    return torch.where(allowed, torch.relu(s), torch.zeros_like(s)) / torch.where(count > 0, count, torch.ones_like(count))


def ref_additive(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    w_q = kernel.w_q.weight.detach().double()  # (A, D)
    w_k = kernel.w_k.weight.detach().double()  # (A, D)
    b_k = kernel.w_k.bias.detach().double()  # (A,)
    v = kernel.v.weight.detach().double()[0]  # (A,)
    qa = torch.einsum("ad,bhid->bhia", w_q, q)  # (B, H, Tq, A)
    ka = torch.einsum("ad,bhjd->bhja", w_k, k) + b_k  # (B, H, Tk, A)
    s = torch.einsum("a,bhija->bhij", v, torch.tanh(qa[:, :, :, None, :] + ka[:, :, None, :, :]))
    return softmax_weights(s if bias is None else s + bias, allowed)


# Sparse patterns: small sizes so that length-7 sequences are really sparse; the predicate
# and its parameters for the reference; kinds that are bidirectional-only (need Tq <= Tk).
PARAMS: dict[str, dict] = {
    "sliding_window": dict(window=3),
    "dilated_window": dict(window=3, dilation=2),
    "global_window": dict(window=2, global_positions=[0]),
    "strided": dict(stride=2),
    "fixed": dict(stride=3, c=1),
    "bigbird": dict(block=2, window_blocks=1, global_blocks=1, random_blocks=0),
    "lsh": dict(n_hashes=2, n_buckets=1, chunk=8),  # one bucket, one chunk: full attention minus self
    "routing": dict(n_clusters=3, chunk=4),
    "performer": dict(n_features=16, chunk=4),
    "linformer": dict(max_len=8, k=3),
    "adaptive_span": dict(max_span=4, ramp=2, init=0.5),
    "hierarchical": dict(block=3),
}
PATTERN_PREDICATES: dict[str, Callable[..., bool]] = {
    "sliding_window": sref.sliding,
    "dilated_window": sref.dilated,
    "global_window": lambda i, j, causal=False, **p: sref.global_window(i, j, **p),
    "strided": sref.strided,
    "fixed": sref.fixed,
    "bigbird": lambda i, j, block, causal=False, **_: i // block == j // block or j // block == 0 or i // block == 0,
}
BIDIRECTIONAL_ONLY = {"global_window", "bigbird"}


def ref_pattern(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None, *, causal: bool) -> Tensor:
    tq, tk = q.shape[-2], k.shape[-2]
    pred = PATTERN_PREDICATES[kernel.kind]
    extra = {"causal": True} if causal else {}
    pattern = torch.tensor(
        [[bool(pred(tk - tq + i, j, **PARAMS[kernel.kind], **extra)) for j in range(tk)] for i in range(tq)], dtype=torch.bool
    ).reshape(tq, tk)
    both = pattern if allowed is None else allowed & pattern
    s = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
    return softmax_weights(s if bias is None else s + bias, both.expand_as(s))


def ref_linear(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    phi = lambda x: torch.where(x > 0, x + 1, torch.exp(x))  # noqa: E731  (elu + 1)
    w = torch.einsum("bhid,bhjd->bhij", phi(q), phi(k))
    if allowed is not None:
        w = w * allowed
    den = w.sum(-1, keepdim=True)
    return w / torch.where(den > 0, den, torch.ones_like(den))


def ref_performer(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    """Linear attention with FAVOR+ features from the kernel's random projection W:
    phi(x) = exp(W x' - |x'|^2 / 2) / sqrt(m), x' = x d^(-1/4) (Choromanski et al. 2021)."""
    w_rf = kernel.projection.double()  # (M, D)

    def phi(x: Tensor) -> Tensor:
        x = x / x.shape[-1] ** 0.25
        return torch.exp(x @ w_rf.T - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(w_rf.shape[0])

    w = torch.einsum("bhim,bhjm->bhij", phi(q), phi(k))
    if allowed is not None:
        w = w * allowed
    den = w.sum(-1, keepdim=True)
    return w / torch.where(den > 0, den, torch.ones_like(den))


def ref_linformer(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    """Effective weights of eq. (7) of Wang et al. 2020, softmax(Q (E K)^T / sqrt(d)) F, with the
    kernel's E and F; padded keys (the only mask it takes) are zeroed before the projection."""
    tk = k.shape[-2]
    e, f = kernel.e.detach().double()[:, :tk], kernel.f.detach().double()[:, :tk]  # (k, Tk)
    keep = torch.ones(1, 1, 1, tk, dtype=torch.float64) if allowed is None else allowed[:, :1, :1, :].double()  # (B, 1, 1, Tk)
    ek = torch.einsum("mj,bhjd->bhmd", e, k * keep.transpose(-2, -1))
    p = torch.softmax(torch.einsum("bhid,bhmd->bhim", q, ek) / math.sqrt(q.shape[-1]), dim=-1)
    return torch.einsum("bhim,mj->bhij", p, f) * keep


def ref_lsh(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    """Reformer with one bucket and one chunk: softmax over the unit-normalised keys, without
    the query's own position unless it sees nothing else."""
    kn = k / k.norm(dim=-1, keepdim=True)
    s = torch.einsum("bhid,bhjd->bhij", q, kn) / math.sqrt(q.shape[-1])
    vis = torch.ones_like(s, dtype=torch.bool) if allowed is None else allowed.expand_as(s)
    others = vis & ~torch.eye(s.shape[-1], dtype=torch.bool)
    vis = torch.where(others.any(-1, keepdim=True), others, vis)
    return softmax_weights(s if bias is None else s + bias, vis)


def ref_routing(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    """Scaled-dot softmax within clusters; queries and keys routed here to the nearest of the
    kernel's centroids (dot product of unit vectors)."""
    mu = kernel.centroids.double()  # (H, C, D)
    cq = torch.einsum("bhtd,hcd->bhtc", q / q.norm(dim=-1, keepdim=True), mu).argmax(-1)
    ck = torch.einsum("bhtd,hcd->bhtc", k / k.norm(dim=-1, keepdim=True), mu).argmax(-1)
    same = cq[..., :, None] == ck[..., None, :]
    s = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
    return softmax_weights(s if bias is None else s + bias, same if allowed is None else same & allowed)


def ref_hierarchical(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    """Exact weights on the query's own block, one weight per other block's summary (the mean of the keys of that
    block the query sees) spread over those keys (Zhu & Soricut 2021); query i at key i (Tq == Tk), else at its last
    visible key, or at key Tk - Tq + i without a mask."""
    b, h, tq, d = q.shape
    tk, n = k.shape[-2], kernel.block
    no_mask = allowed is None  # then query i sits at key tk - tq + i
    allowed = torch.ones(b, h, tq, tk, dtype=torch.bool) if allowed is None else allowed.expand(b, h, tq, tk)
    w = torch.zeros(b, h, tq, tk, dtype=q.dtype) + 0 * (q.sum() + k.sum())  # in the graph even when no row sees a key
    for bi in range(b):
        for hi in range(h):
            for i in range(tq):
                seen = [j for j in range(tk) if allowed[bi, hi, i, j]]
                if not seen:
                    continue
                p = i if tq == tk else tk - tq + i if no_mask else seen[-1]
                own = [j for j in seen if j // n == p // n]
                groups = [[j for j in seen if j // n == e] for e in range(-(-tk // n)) if e != p // n]
                groups = [g for g in groups if g]
                scores = [q[bi, hi, i] @ k[bi, hi, j] / math.sqrt(d) for j in own]
                scores += [q[bi, hi, i] @ k[bi, hi, g].mean(0) / math.sqrt(d) for g in groups]
                a = torch.stack(scores).softmax(0)
                for x, j in enumerate(own):
                    w[bi, hi, i, j] = w[bi, hi, i, j] + a[x]
                for y, g in enumerate(groups):
                    for j in g:
                        w[bi, hi, i, j] = w[bi, hi, i, j] + a[len(own) + y] / len(g)
    return w


def ref_adaptive_span(kernel: nn.Module, q: Tensor, k: Tensor, allowed: Tensor | None, bias: Tensor | None) -> Tensor:
    """Sukhbaatar et al. 2019, eq. 3: m_z(x) exp(s) renormalised over the allowed keys, m_z(x) = clamp((R + z - x)/R, 0, 1),
    x = (the query's last allowed key, or Tk - Tq + i without a mask) - j; entry by entry."""
    b, h, tq, tk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    z = kernel.span.detach().double()
    s = torch.einsum("bhid,bhjd->bhij", q, k) / math.sqrt(q.shape[-1])
    s = s if bias is None else s + bias
    m = torch.zeros(b, h, tq, tk, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for i in range(tq):
                seen = [j for j in range(tk) if allowed is None or allowed[bi, hi, i, j]]
                pos = (tk - tq + i) if allowed is None else (max(seen) if seen else -1)
                for j in range(tk):
                    m[bi, hi, i, j] = min(1.0, max(0.0, (kernel.ramp + float(z[hi]) - (pos - j)) / kernel.ramp))
    keep = m > 0 if allowed is None else (m > 0) & allowed
    return softmax_weights(s + torch.where(m > 0, m, torch.ones_like(m)).log(), keep)


REFERENCES: dict[str, Callable[..., Tensor]] = {
    "scaled_dot": ref_scaled_dot,
    "dot": ref_scaled_dot,
    "relu": ref_relu,
    "additive": ref_additive,
    "linear": ref_linear,
    "lsh": ref_lsh,
    "routing": ref_routing,
    "adaptive_span": ref_adaptive_span,
    "hierarchical": ref_hierarchical,
    "performer": ref_performer,
    "linformer": ref_linformer,
    **{kind: ref_pattern for kind in PATTERN_PREDICATES},
}


def make_kernel(kind: str, d: int, h: int, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return A.build(kind, head_dim=d, n_heads=h, params=PARAMS.get(kind)).to(dtype).eval()


# -- the conformance test ----------------------------------------------------------------
shapes = st.tuples(
    st.integers(1, 3),  # B
    st.integers(1, 3),  # H
    st.integers(1, 7),  # Tq
    st.integers(1, 7),  # Tk
    st.sampled_from([1, 4, 8, 16]),  # D
    st.sampled_from([0, 3]),  # Dv - D
    st.sampled_from(["none", "bhqk", "hqk", "qk"]),  # bias shape
    st.integers(0, 2**31 - 1),  # seed
)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("kind", A.names())
@SETTINGS
@given(shape=shapes)
def test_kernel_matches_reference(kind: str, mask_kind: str, dtype: torch.dtype, shape: tuple) -> None:
    if kind not in REFERENCES:
        pytest.skip(f"no independent reference for attention kind {kind!r}; add one to REFERENCES in {__name__}")
    b, h, tq, tk, d, extra_dv, bias_shape, seed = shape
    dv = d + extra_dv
    gen = torch.Generator().manual_seed(seed)
    kernel = make_kernel(kind, d, h, dtype)
    lengths = [int(torch.randint(0, tk + 1, (), generator=gen)) for _ in range(b)]
    lengths[-1] = tk  # one unpadded row
    if b > 1:
        lengths[0] = 0  # one row whose keys are all padding
    allowed = allowed_mask(mask_kind, b, h, tq, tk, lengths, gen)
    mask, causal = user_mask(mask_kind, allowed, lengths, tk)
    bias64 = None
    if bias_shape != "none":
        full = torch.randn(b, h, tq, tk, generator=gen, dtype=torch.float64)
        bias64 = {"bhqk": full, "hqk": full[0], "qk": full[0, 0]}[bias_shape]

    # Inputs in the kernel's dtype; the reference sees exactly the same values in float64.
    def leaf(*size: int) -> Tensor:
        return torch.randn(*size, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()

    q, k, v = leaf(b, h, tq, d), leaf(b, h, tk, d), leaf(b, h, tk, dv)
    g = torch.randn(b, h, tq, dv, generator=gen, dtype=torch.float64)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    bias = None if bias64 is None else bias64.to(dtype).requires_grad_()
    bias_ref = None if bias is None else bias.detach().double().requires_grad_()

    if (
        (kind in BIDIRECTIONAL_ONLY and (causal or tq > tk))
        or (kind in ("linear", "performer", "hierarchical") and bias is not None)
        or (kind == "lsh" and tq != tk)
        or (kind == "linformer" and (causal or bias is not None or (mask_kind == "random" and (h, tq) != (1, 1))))
    ):
        with pytest.raises(ValueError):
            kernel(q, k, v, mask=mask, bias=bias, causal=causal)
        return
    extra = {"causal": causal} if kind in PATTERN_PREDICATES else {}
    w_ref = REFERENCES[kind](kernel, q64, k64, allowed, bias_ref, **extra)  # (B, H, Tq, Tk)
    out_ref = torch.einsum("bhij,bhjd->bhid", w_ref, v64)
    out_ref.backward(g)

    out = kernel(q, k, v, mask=mask, bias=bias, causal=causal)
    assert out.shape == (b, h, tq, dv) and out.dtype == dtype
    out.backward(g.to(dtype))
    (rtol, atol), (grtol, gatol) = TOL[dtype]
    torch.testing.assert_close(out.double(), out_ref.detach(), rtol=rtol, atol=atol)
    pairs = [("q", q, q64), ("k", k, k64), ("v", v, v64)] + ([("bias", bias, bias_ref)] if bias is not None else [])
    for name, mine, ref in pairs:
        assert torch.isfinite(mine.grad).all(), f"non-finite gradient w.r.t. {name}"
        if dtype == torch.bfloat16:
            if kind in NONSMOOTH and name != "v":
                # A score within bf16 rounding of ReLU's kink (say 0.004 rounded to 0) flips
                # its gate and moves the q/k gradient by O(1); only the v gradient is stable.
                continue
            # Elementwise bf16 gradients are noisy; compare the gradient as a whole.
            err = (mine.grad.double() - ref.grad).norm()
            assert err <= 0.05 * ref.grad.norm() + gatol, f"grad {name}: relative error {err / ref.grad.norm():.3g}"
        else:
            torch.testing.assert_close(mine.grad.double(), ref.grad, rtol=grtol, atol=gatol, msg=lambda m: f"grad {name}: {m}")

    # Rows with no visible key: exactly zero output and zero gradient into their query.
    if allowed is not None:
        empty = ~allowed.any(-1)  # (B, H, Tq)
        assert (out.detach()[empty] == 0).all()
        assert (q.grad[empty] == 0).all()

    # need_weights=True: the reference weights, and the same output as the fast path.
    with torch.no_grad():
        out_w, w = kernel(q, k, v, mask=mask, bias=bias, causal=causal, need_weights=True)
    assert w.shape == (b, h, tq, tk)
    assert torch.isfinite(w).all() and torch.isfinite(out_w).all()
    torch.testing.assert_close(w.double(), w_ref.detach(), rtol=rtol, atol=atol)
    torch.testing.assert_close(out_w, out.detach(), rtol=rtol, atol=atol)


# -- scaled_dot against PyTorch's own SDPA ------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("tq,tk", [(5, 5), (1, 1), (3, 7), (7, 3)])
def test_scaled_dot_matches_torch_sdpa(causal: bool, need_weights: bool, tq: int, tk: int) -> None:
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, tq, 8, generator=gen, dtype=torch.float64)
    k = torch.randn(2, 3, tk, 8, generator=gen, dtype=torch.float64)
    v = torch.randn(2, 3, tk, 8, generator=gen, dtype=torch.float64)
    kernel = A.get("scaled_dot")
    res = kernel(q, k, v, causal=causal, need_weights=need_weights)
    out = res[0] if need_weights else res
    if causal and tq != tk:
        # SDPA's is_causal is top-left aligned; attnkit's is bottom-right, so pass it explicitly
        # (and only where every row sees a key: fully masked rows are NaN in SDPA).
        bottom_right = torch.ones(tq, tk, dtype=torch.bool).tril(diagonal=tk - tq)
        rows = bottom_right.any(-1)
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bottom_right | ~rows[:, None])
        torch.testing.assert_close(out[:, :, rows], expected[:, :, rows], rtol=1e-10, atol=1e-10)
        assert (out[:, :, ~rows] == 0).all()
    else:
        expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


def test_dot_has_no_scale_and_scaled_dot_scale_overrides() -> None:
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=gen, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(A.get("dot")(q, k, v), F.scaled_dot_product_attention(q, k, v, scale=1.0))
    torch.testing.assert_close(A.get("scaled_dot", scale=0.3)(q, k, v), F.scaled_dot_product_attention(q, k, v, scale=0.3))


def test_additive_chunking_does_not_change_scores() -> None:
    """The (Tq, Tk, A) tanh is evaluated in query chunks; one row at a time must equal one shot."""
    torch.manual_seed(3)
    whole = A.get("additive", head_dim=4, attn_dim=6).double()
    rows = A.get("additive", head_dim=4, attn_dim=6, chunk_elements=1).double()
    rows.load_state_dict(whole.state_dict())
    q, k = torch.randn(2, 3, 5, 4, dtype=torch.float64), torch.randn(2, 3, 7, 4, dtype=torch.float64)
    torch.testing.assert_close(rows.scores(q, k), whole.scores(q, k))
    assert rows.scores(q, k).shape == (2, 3, 5, 7)


@pytest.mark.parametrize("kind", A.names())
def test_kernel_rejects_non_boolean_mask(kind: str) -> None:
    kernel = A.build(kind, head_dim=4, n_heads=1)
    q = torch.randn(1, 1, 3, 4)
    with pytest.raises(TypeError, match="boolean"):
        kernel(q, q, q, mask=torch.ones(3, 3))


# -- registry ------------------------------------------------------------------------------
def test_names_lists_the_builtin_kinds_sorted() -> None:
    names = A.names()
    assert {"scaled_dot", "dot", "additive", "relu"} <= set(names)
    assert names == sorted(names)


def test_get_unknown_kind_names_it() -> None:
    with pytest.raises(ValueError, match="'no_such_kernel'") as info:
        A.get("no_such_kernel")
    assert "scaled_dot" in str(info.value)  # lists the choices


def test_get_unknown_parameter_names_it() -> None:
    with pytest.raises(ValueError, match="'windw'"):
        A.get("scaled_dot", windw=3)
    with pytest.raises(ValueError, match="'scale'"):
        A.get("dot", scale=2.0)  # dot fixes the scale


def test_get_invalid_value_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="scale"):
        A.get("scaled_dot", scale=-1.0)


def test_register_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'scaled_dot'"):
        register("scaled_dot")(type("Impostor", (A.AttentionKernel,), {}))


def test_build_passes_head_dim_only_to_kernels_that_take_it() -> None:
    additive = A.build("additive", head_dim=6, n_heads=2)
    assert additive.w_q.in_features == 6
    assert isinstance(A.build("scaled_dot", head_dim=6, n_heads=2), A.AttentionKernel)
