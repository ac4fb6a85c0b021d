"""Linformer against eq. (7) written out here with the kernel's own E and F."""

from __future__ import annotations

import math

import pytest
import torch

import attnkit.attention as A


def explicit(q, k, v, e, f, keep=None):
    t = k.shape[-2]
    if keep is not None:
        k, v = k * keep, v * keep
    ek = torch.einsum("kn,bhnd->bhkd", e[:, :t].double(), k)
    fv = torch.einsum("kn,bhnd->bhkd", f[:, :t].double(), v)
    return torch.softmax(q @ ek.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1) @ fv


@pytest.mark.parametrize("tq,tk", [(1, 1), (9, 20), (20, 20), (30, 32)])
@pytest.mark.parametrize("padding", [False, True])
def test_linformer_equals_eq7(tq: int, tk: int, padding: bool) -> None:
    torch.manual_seed(0)
    kernel = A.get("linformer", max_len=32, k=6).double()
    q, k, v = (torch.randn(2, 3, t, 8, dtype=torch.float64, requires_grad=True) for t in (tq, tk, tk))
    mask = keep = None
    if padding:
        mask = torch.tensor([[j < n for j in range(tk)] for n in (tk, tk // 2)])[:, None, None, :]
        keep = mask[:, :, 0, :, None].double()
    expected = explicit(q, k, v, kernel.e, kernel.f, keep)
    out, w = kernel(q, k, v, mask=mask, need_weights=True)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(w @ v, expected)  # the effective weights reproduce the output
    g = torch.randn_like(out)
    params = (q, k, v, kernel.e)
    got = torch.autograd.grad(out, params, g)
    want = torch.autograd.grad(expected, params, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_linformer_bad_input() -> None:
    kernel = A.get("linformer", max_len=16, k=4)
    q = torch.randn(1, 2, 8, 8)
    with pytest.raises(ValueError, match="cannot be causal"):
        kernel(q, q, q, causal=True)
    with pytest.raises(ValueError, match="no score bias"):
        kernel(q, q, q, bias=torch.zeros(8, 8))
    with pytest.raises(ValueError, match="key-padding masks"):
        kernel(q, q, q, mask=torch.ones(8, 8, dtype=torch.bool))
    long = torch.randn(1, 2, 17, 8)
    with pytest.raises(ValueError, match="max_len=16"):
        kernel(long, long, long)
    with pytest.raises(ValueError, match="k=0"):
        A.get("linformer", k=0)
