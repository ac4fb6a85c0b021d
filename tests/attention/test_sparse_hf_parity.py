"""``sliding_window`` and ``global_window`` against Hugging Face's ``LongformerSelfAttention``,
an implementation we did not write (Beltagy et al. 2020), given the same projections.

HF's attention window w means w/2 keys on each side, the same band as ours; its global
tokens use separate projections, which are set equal to the local ones here so that the
two compute the same function. HF takes its softmax in float32, hence the 1e-6 tolerance on float64 inputs.
"""

from __future__ import annotations

import pytest
import torch

import attnkit.attention as A

transformers = pytest.importorskip("transformers")
from transformers.models.longformer.modeling_longformer import LongformerSelfAttention  # noqa: E402

D_MODEL, N_HEADS, WINDOW, T = 32, 4, 8, 48


def _hf(global_positions: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    cfg = transformers.LongformerConfig(hidden_size=D_MODEL, num_attention_heads=N_HEADS, attention_window=[WINDOW],
                                        attention_probs_dropout_prob=0.0)
    mod = LongformerSelfAttention(cfg, layer_id=0).double().eval()
    with torch.no_grad():
        for local, glob in ((mod.query, mod.query_global), (mod.key, mod.key_global), (mod.value, mod.value_global)):
            glob.load_state_dict(local.state_dict())
    x = torch.randn(2, T, D_MODEL, dtype=torch.float64)
    is_global = torch.zeros(2, T, dtype=torch.bool)
    is_global[:, global_positions] = True
    mask = is_global.double() * 10000.0  # HF's extended mask: 0 local, +10000 global
    out = mod(x, attention_mask=mask, is_index_masked=torch.zeros_like(is_global), is_index_global_attn=is_global,
              is_global_attn=bool(global_positions))[0]

    def heads(lin: torch.nn.Linear) -> torch.Tensor:
        return lin(x).view(2, T, N_HEADS, D_MODEL // N_HEADS).transpose(1, 2)  # (B, H, T, d)

    with torch.no_grad():
        return out.detach(), heads(mod.query), heads(mod.key), heads(mod.value), x


def test_sliding_window_matches_hf_longformer() -> None:
    hf, q, k, v, _ = _hf([])
    for backend in ("chunked", "dense"):
        ours = A.get("sliding_window", window=WINDOW, chunk=16, backend=backend)(q, k, v)
        torch.testing.assert_close(ours.transpose(1, 2).reshape(2, T, D_MODEL), hf, rtol=1e-5, atol=1e-6)


def test_global_window_matches_hf_longformer_global_attention() -> None:
    hf, q, k, v, _ = _hf([0, 17])
    ours = A.get("global_window", window=WINDOW, global_positions=[0, 17], chunk=16, backend="chunked")(q, k, v)
    torch.testing.assert_close(ours.transpose(1, 2).reshape(2, T, D_MODEL), hf, rtol=1e-5, atol=1e-6)
