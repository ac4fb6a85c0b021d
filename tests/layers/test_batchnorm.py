"""The masked BatchNorm against torch.nn.BatchNorm1d over the real tokens, and the Transformer's norm choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnkit.errors import ConfigError
from attnkit.layers.batchnorm import MaskedBatchNorm, token_mask
from attnkit.layers.norm import RMSNorm, build_norm
from attnkit.models.transformer import Transformer, preset


def test_training_statistics_and_running_estimates_match_batchnorm1d_on_real_tokens() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 7, 8, dtype=torch.float64) * 2 + 1
    keep = torch.ones(3, 7, dtype=torch.bool)
    keep[0, 5:], keep[2, 2:] = False, False
    mine = MaskedBatchNorm(8).double()
    ref = nn.BatchNorm1d(8, dtype=torch.float64)
    g, b = torch.randn(8), torch.randn(8)
    with torch.no_grad():
        for m in (mine, ref):
            m.weight.copy_(g)
            m.bias.copy_(b)
    x[~keep] = 1e6  # padding must not move the statistics
    for _ in range(3):
        with token_mask(mine, keep):
            got = mine(x)
        want = ref(x[keep])  # (N, C): the real tokens as BatchNorm1d's batch
        torch.testing.assert_close(got[keep], want)
    torch.testing.assert_close(mine.running_mean, ref.running_mean)
    torch.testing.assert_close(mine.running_var, ref.running_var)
    mine.eval(), ref.eval()
    torch.testing.assert_close(mine(x)[keep], ref(x[keep]))  # evaluation: the running estimates, per token
    assert mine.keep is None  # the mark lasts for the block only


def test_build_norm_choices() -> None:
    assert isinstance(build_norm("batch", 4), MaskedBatchNorm)
    assert isinstance(build_norm("rms", 4), RMSNorm)
    with pytest.raises(ValueError, match="norm='group'"):
        build_norm("group", 4)


@pytest.mark.parametrize("norm", ["layer", "rms", "batch"])
def test_transformer_norm_choice_trains_and_sees_only_real_tokens(norm: str) -> None:
    torch.manual_seed(0)
    model = Transformer(preset("transformer-tiny", norm=norm, dropout=0.0))
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"layer": "LayerNorm", "rms": "RMSNorm", "batch": "MaskedBatchNorm"}[norm] in kinds
    src = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 0]])
    tgt = torch.tensor([[1, 5, 6, 7], [1, 8, 0, 0]])
    model.train()
    out = model(src, tgt).logits
    out.sum().backward()
    # more padding columns change nothing at the real positions: the batch statistics skip padding
    wider = model(torch.nn.functional.pad(src, (0, 3)), torch.nn.functional.pad(tgt, (0, 3))).logits
    keep = tgt != 0
    torch.testing.assert_close(wider[:, :4][keep], out[keep], atol=1e-5, rtol=0)


def test_unknown_norm_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="norm"):
        preset("transformer-tiny").with_overrides(["norm=group"])
