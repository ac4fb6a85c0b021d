"""The FlexAttention branch of the sparse kernels, run on the CPU (inference only there).

FlexAttention compiles for the CPU in inference mode, so the branch the GPU takes can be
checked here against the dense pattern mask: the pattern's block mask plus a key-padding mask
passed as a score modification. ``flex.available`` is patched to accept CPU tensors.
"""

from __future__ import annotations

import pytest
import torch

import attnkit.attention as A
from attnkit.attention import flex

pytestmark = [pytest.mark.slow, pytest.mark.skipif(flex.flex_attention is None, reason="no FlexAttention")]


def test_key_padding_only_masks_are_recognised() -> None:
    keep = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    assert flex.key_padding(keep, 2, 9).shape == (2, 9)
    assert flex.key_padding(keep[:1], 2, 9).shape == (2, 9)  # broadcast over the batch
    assert flex.key_padding(torch.ones(2, 1, 9, 9, dtype=torch.bool), 2, 9) is None  # per-query masks: not a score mod
    assert flex.key_padding(keep.float(), 2, 9) is None
    assert flex.key_padding(None, 2, 9) is None


def test_flex_branch_with_key_padding_equals_dense_mask_on_cpu(monkeypatch) -> None:
    monkeypatch.setattr(flex, "available", lambda q: True)
    monkeypatch.setattr(flex, "_COMPILED", {})
    flex._MASKS.clear()
    torch.manual_seed(0)
    t = 256
    q, k, v = (torch.randn(2, 2, t, 16) for _ in range(3))
    keep = torch.ones(2, 1, 1, t, dtype=torch.bool)
    keep[1, ..., 100:] = False  # row 1: queries past ~120 see only padding in their window
    fast = A.get("sliding_window", window=32, backend="flex").eval()
    ref = A.get("sliding_window", window=32, backend="dense").eval()
    with torch.no_grad():
        out = fast(q, k, v, mask=keep)
        want = ref(q, k, v, mask=keep)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(out[1, :, 200:], torch.zeros_like(out[1, :, 200:]))
    flex._MASKS.clear()
    torch._dynamo.reset()


def test_bigbird_flex_tiles_are_checked() -> None:
    assert A.get("bigbird", flex_tiles=(128, 64)).flex_tiles == (128, 64)
    assert A.get("bigbird").flex_tiles is None
    for bad in [(100, 64), (128,), (8, 8), (True, 64), "128x64"]:
        with pytest.raises(ValueError, match="flex_tiles"):
            A.get("bigbird", flex_tiles=bad)


def test_compiled_flex_modes_are_kept_apart(monkeypatch) -> None:
    """One compiled FlexAttention per autotune setting and grad mode, each with its torch.compile mode and
    its own code object (where dynamo keeps and counts its variants), compiled whole."""
    calls = []
    monkeypatch.setattr(flex, "_COMPILED", {})
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append((fn.__code__, kw)) or (lambda *a, **k: kw["mode"]))
    assert flex.compiled() is flex.compiled()
    flex.compiled(autotune=True)
    assert [kw["mode"] for _, kw in calls] == [None, None, "max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs"]
    assert all(kw["fullgraph"] is True and kw["dynamic"] is False for _, kw in calls)
    assert len({id(code) for code, _ in calls}) == 4
    with pytest.raises(ValueError, match="cuda_graphs"):
        A.get("bigbird", cuda_graphs="yes")
    with pytest.raises(ValueError, match="cuda_graphs"):
        A.get("linear", cuda_graphs=1)