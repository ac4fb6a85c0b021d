"""Mean pooling against a per-row loop over the real tokens."""

from __future__ import annotations

import torch

from attnkit.layers.pooling import mean_pool


def test_mean_pool_averages_real_tokens_only():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 6, 4, generator=g)
    lengths = [6, 2, 0]
    mask = torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]  # (B, T) bool
    ref = torch.stack([h[b, :n].mean(0) if n else torch.zeros(4) for b, n in enumerate(lengths)])
    torch.testing.assert_close(mean_pool(h, mask), ref)
    torch.testing.assert_close(mean_pool(h, mask.long()), ref)  # 0/1 integer masks alike
    torch.testing.assert_close(mean_pool(h, None), h.mean(1))
