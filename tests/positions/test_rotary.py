"""Rotary embeddings against Hugging Face's Llama rotary code (half layout, scaling parameters), a complex-number
reference of RoFormer eq. (34) (interleaved layout), and the layout conversion of Meta -> Hugging Face checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPTNeoXConfig, LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb as neox_apply
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from attnkit.positions.rotary import RotaryEmbedding, half_to_interleaved, interleaved_to_half, inverse_frequencies

B, H, T, D = 2, 3, 7, 16


def hf_rotary(config: LlamaConfig, q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rope = LlamaRotaryEmbedding(config)
    cos, sin = rope(q, pos)  # (B, T, D)
    return apply_rotary_pos_emb(q, k, cos, sin)


def test_half_layout_matches_hf_llama_with_cache_offset_and_per_row_positions() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    pos = torch.tensor([[5, 6, 7, 8, 9, 10, 11], [0, 0, 1, 2, 3, 4, 5]])
    config = LlamaConfig(hidden_size=H * D, num_attention_heads=H, rope_theta=500000.0, max_position_embeddings=64)
    want_q, want_k = hf_rotary(config, q, k, pos)
    got_q, got_k = RotaryEmbedding(D, base=500000.0)(q, k, pos)
    torch.testing.assert_close(got_q, want_q, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_k, want_k, atol=1e-5, rtol=0)
    # (T,) positions: the same for every row
    got_q1, _ = RotaryEmbedding(D, base=500000.0)(q, k, pos[0])
    torch.testing.assert_close(got_q1[0], want_q[0], atol=1e-5, rtol=0)


def complex_reference(x: torch.Tensor, pos: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """RoFormer eq. (34) as Meta's code writes it: feature pairs as complex numbers times e^{i m theta}."""
    xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], -1, 2))  # (B, H, T, D/2)
    rot = torch.polar(torch.ones(len(pos), len(theta), dtype=torch.float64), pos[:, None].double() * theta.double())
    return torch.view_as_real(xc * rot).flatten(-2).float()


def test_interleaved_layout_matches_complex_rotation() -> None:
    torch.manual_seed(1)
    q, k = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    pos = torch.arange(3, 3 + T)
    rope = RotaryEmbedding(D, layout="interleaved")
    got_q, got_k = rope(q, k, pos)
    theta = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    torch.testing.assert_close(got_q, complex_reference(q, pos, theta), atol=1e-5, rtol=0)
    torch.testing.assert_close(got_k, complex_reference(k, pos, theta), atol=1e-5, rtol=0)


def test_scores_depend_on_the_distance_only() -> None:
    torch.manual_seed(2)
    q, k = torch.randn(1, 1, 1, D), torch.randn(1, 1, 1, D)
    rope = RotaryEmbedding(D, layout="interleaved")
    s = [(rope(q, k, torch.tensor([m]))[0] * rope(q, k, torch.tensor([m - 3]))[1]).sum() for m in (3, 10, 50)]
    torch.testing.assert_close(torch.stack(s), s[0].expand(3), atol=1e-4, rtol=0)


def test_partial_rotary_matches_hf_gpt_neox_and_leaves_the_rest() -> None:
    torch.manual_seed(3)
    q, k = torch.randn(B, H, T, D), torch.randn(B, H, T, D)
    pos = torch.arange(T)[None].expand(B, T)
    config = GPTNeoXConfig(hidden_size=H * D, num_attention_heads=H, max_position_embeddings=64)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    cos, sin = GPTNeoXRotaryEmbedding(config)(q, pos)  # (B, T, D/2)
    want_q, want_k = neox_apply(q, k, cos, sin)
    got_q, got_k = RotaryEmbedding(D, rotary_dim=D // 2)(q, k, pos)
    torch.testing.assert_close(got_q, want_q, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_k, want_k, atol=1e-5, rtol=0)
    assert torch.equal(got_k[..., D // 2 :], k[..., D // 2 :])


@pytest.mark.parametrize("kind", ["linear", "yarn"])
def test_scaled_frequencies_match_hf(kind: str) -> None:
    config = LlamaConfig(hidden_size=4 * 64, num_attention_heads=4, max_position_embeddings=8192)
    params = {"rope_type": kind, "rope_theta": 10000.0, "factor": 4.0}
    if kind == "yarn":
        params["original_max_position_embeddings"] = 2048
    config.rope_parameters = params
    want, want_factor = ROPE_INIT_FUNCTIONS[kind](config, torch.device("cpu"))
    got, got_factor = inverse_frequencies(64, 10000.0, kind, 4.0, original_max_len=2048)  # type: ignore[arg-type]
    torch.testing.assert_close(got, want.float(), rtol=1e-6, atol=0)
    assert got_factor == pytest.approx(want_factor)


def test_ntk_scaling_is_the_base_change_of_the_formula() -> None:
    d, s = 64, 8.0
    got, _ = inverse_frequencies(d, 10000.0, "ntk", s)
    base = 10000.0 * s ** (d / (d - 2))
    want = torch.tensor([base ** (-2 * i / d) for i in range(d // 2)])
    torch.testing.assert_close(got, want.float(), rtol=1e-6, atol=0)
    assert got[0] == 1.0 and got[-1] == pytest.approx(10000.0 ** (-(d - 2) / d) / s, rel=1e-5)  # lowest frequency / s


@pytest.mark.parametrize("rotary_dim", [D, D // 2])
def test_layout_conversion_both_ways_gives_the_same_scores(rotary_dim: int) -> None:
    torch.manual_seed(4)
    d_in = 20
    wq, wk, bq = torch.randn(H * D, d_in), torch.randn(H * D, d_in), torch.randn(H * D)
    x = torch.randn(B, T, d_in)
    pos = torch.arange(T)

    def scores(wq: torch.Tensor, wk: torch.Tensor, bq: torch.Tensor, layout: str) -> torch.Tensor:
        q = (x @ wq.T + bq).view(B, T, H, D).transpose(1, 2)
        k = (x @ wk.T).view(B, T, H, D).transpose(1, 2)
        q, k = RotaryEmbedding(D, rotary_dim=rotary_dim, layout=layout)(q, k, pos)  # type: ignore[arg-type]
        return q @ k.transpose(-1, -2)

    meta = scores(wq, wk, bq, "interleaved")
    hf = scores(*(interleaved_to_half(w, H, rotary_dim) for w in (wq, wk, bq)), "half")
    torch.testing.assert_close(hf, meta, atol=1e-4, rtol=1e-5)
    back = [half_to_interleaved(interleaved_to_half(w, H, rotary_dim), H, rotary_dim) for w in (wq, wk, bq)]
    assert all(torch.equal(a, b) for a, b in zip(back, (wq, wk, bq)))
    assert not torch.equal(interleaved_to_half(wq, H, rotary_dim), wq)


def test_conversion_matches_the_hf_llama_permute_formula() -> None:
    """Hugging Face's convert_llama_weights_to_hf: view(h, D/2, 2, d_in).transpose(1, 2)."""
    w = torch.randn(H * D, 5)
    want = w.view(H, D // 2, 2, 5).transpose(1, 2).reshape(H * D, 5)
    assert torch.equal(interleaved_to_half(w, H), want)


def test_bad_arguments_are_refused() -> None:
    for kw in ({"rotary_dim": 3}, {"rotary_dim": 2 * D}, {"layout": "complex"}, {"scaling": "dynamic"}, {"factor": 0.5}):
        with pytest.raises(ValueError):
            RotaryEmbedding(D, **kw)  # type: ignore[arg-type]
    assert math.isclose(RotaryEmbedding(D, scaling="yarn", factor=4.0).attention_factor, 0.1 * math.log(4.0) + 1)
