"""Encoder/decoder layers and stacks against torch.nn.Transformer* with copied weights.

Key map from torch's modules to attnkit's (one place, used by every test here):
``self_attn.in_proj_*`` -> ``self_attn.qkv_proj``; ``multihead_attn.in_proj_*`` -> split into
``cross_attn.q_proj`` and ``cross_attn.kv_proj``; ``linear1/2`` -> ``ffn.w1/w2``; encoder
``norm1/2`` -> ``res_attn/res_ffn.norm``; decoder ``norm1/2/3`` -> ``res_self/res_cross/res_ffn.norm``.
Loading with ``strict=True`` checks that every attnkit parameter got a torch counterpart.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor, nn

import attnkit
from attnkit.attention import padding_mask
from attnkit.layers import Decoder, DecoderLayer, Encoder, EncoderLayer, LayerSpec

D, H, FF = 16, 4, 32
SRC_LENGTHS = torch.tensor([6, 4, 1])  # (B,): memory/source rows padded to 6
VARIANTS = [(norm, act) for norm in ("post", "pre") for act in ("relu", "gelu")]



def randomise(module: nn.Module, seed: int) -> None:
    """Distinct, non-default values everywhere (torch clones one layer N times, norms start at 1/0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if p.dim() >= 2:
                p.copy_(noise / p.shape[1] ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            else:
                p.copy_(0.1 * noise)


_RENAMES = [
    (r"self_attn\.in_proj_(weight|bias)$", r"self_attn.qkv_proj.\1"),
    (r"multihead_attn\.out_proj\.", "cross_attn.out_proj."),
    (r"linear1\.", "ffn.w1."),
    (r"linear2\.", "ffn.w2."),
]
_ENC_NORMS = {"norm1": "res_attn.norm", "norm2": "res_ffn.norm"}
_DEC_NORMS = {"norm1": "res_self.norm", "norm2": "res_cross.norm", "norm3": "res_ffn.norm"}


def torch_to_attnkit(state: dict[str, Tensor], d_model: int) -> dict[str, Tensor]:
    """Rename (and split) a torch Transformer*/Transformer state dict into attnkit's names."""
    out: dict[str, Tensor] = {}
    has_cross = any("multihead_attn" in key for key in state)
    for key, t in state.items():
        m = re.match(r"(.*?)multihead_attn\.in_proj_(weight|bias)$", key)
        if m:
            out[f"{m[1]}cross_attn.q_proj.{m[2]}"] = t[:d_model]
            out[f"{m[1]}cross_attn.kv_proj.{m[2]}"] = t[d_model:]
            continue
        for pattern, repl in _RENAMES:
            key = re.sub(pattern, repl, key)
        norms = _DEC_NORMS if has_cross and not key.startswith("encoder.") else _ENC_NORMS
        key = re.sub(r"(^|\.)(norm[123])\.", lambda g: f"{g[1]}{norms[g[2]]}.", key)
        out[key] = t
    return out


def spec(norm: str, act: str) -> LayerSpec:
    return LayerSpec(d_model=D, n_heads=H, d_ff=FF, dropout=0.0, activation=act, norm_position=norm)


def torch_kwargs(norm: str, act: str) -> dict:
    return dict(d_model=D, nhead=H, dim_feedforward=FF, dropout=0.0, activation=act,
                batch_first=True, norm_first=norm == "pre", dtype=torch.float64)


def randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def causal_blocked(t: int) -> Tensor:
    return torch.ones(t, t, dtype=torch.bool).triu(1)  # torch convention: True = blocked


# -- single layers --------------------------------------------------------------------------
@pytest.mark.parametrize("norm,act", VARIANTS)
def test_encoder_layer_matches_torch(norm: str, act: str) -> None:
    theirs = nn.TransformerEncoderLayer(**torch_kwargs(norm, act)).eval()
    randomise(theirs, seed=0)
    mine = EncoderLayer(spec(norm, act)).double().eval()
    mine.load_state_dict(torch_to_attnkit(theirs.state_dict(), D), strict=True)
    x = randn(3, 6, D, seed=1)
    keep = padding_mask(SRC_LENGTHS, max_len=6)  # (B, 1, 1, T)
    out, _ = mine(x, keep)
    torch.testing.assert_close(out, theirs(x, src_key_padding_mask=~keep[:, 0, 0]))


@pytest.mark.parametrize("tgt_padded", [False, True])
@pytest.mark.parametrize("norm,act", VARIANTS)
def test_decoder_layer_matches_torch(norm: str, act: str, tgt_padded: bool) -> None:
    theirs = nn.TransformerDecoderLayer(**torch_kwargs(norm, act)).eval()
    randomise(theirs, seed=0)
    mine = DecoderLayer(spec(norm, act)).double().eval()
    mine.load_state_dict(torch_to_attnkit(theirs.state_dict(), D), strict=True)
    x, memory = randn(3, 5, D, seed=1), randn(3, 6, D, seed=2)
    mem_keep = padding_mask(SRC_LENGTHS, max_len=6)
    tgt_keep = padding_mask(torch.tensor([5, 2, 3]), max_len=5) if tgt_padded else None
    out, _ = mine(x, memory, self_mask=tgt_keep, memory_mask=mem_keep)
    ref = theirs(
        x, memory,
        tgt_mask=causal_blocked(5),
        tgt_key_padding_mask=~tgt_keep[:, 0, 0] if tgt_padded else None,
        memory_key_padding_mask=~mem_keep[:, 0, 0],
    )
    torch.testing.assert_close(out, ref)


# -- stacks -------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,act", VARIANTS)
def test_encoder_stack_matches_torch(norm: str, act: str) -> None:
    final = nn.LayerNorm(D, dtype=torch.float64) if norm == "pre" else None
    theirs = nn.TransformerEncoder(
        nn.TransformerEncoderLayer(**torch_kwargs(norm, act)), num_layers=3, norm=final, enable_nested_tensor=False
    ).eval()
    randomise(theirs, seed=3)
    mine = Encoder(spec(norm, act), n_layers=3).double().eval()
    mine.load_state_dict(torch_to_attnkit(theirs.state_dict(), D), strict=True)
    x = randn(3, 6, D, seed=4)
    keep = padding_mask(SRC_LENGTHS, max_len=6)
    out, weights = mine(x, keep)
    assert len(weights) == 3
    torch.testing.assert_close(out, theirs(x, src_key_padding_mask=~keep[:, 0, 0]))


@pytest.mark.parametrize("norm,act", VARIANTS)
def test_decoder_stack_matches_torch(norm: str, act: str) -> None:
    final = nn.LayerNorm(D, dtype=torch.float64) if norm == "pre" else None
    theirs = nn.TransformerDecoder(nn.TransformerDecoderLayer(**torch_kwargs(norm, act)), num_layers=3, norm=final).eval()
    randomise(theirs, seed=5)
    mine = Decoder(spec(norm, act), n_layers=3).double().eval()
    mine.load_state_dict(torch_to_attnkit(theirs.state_dict(), D), strict=True)
    x, memory = randn(3, 5, D, seed=6), randn(3, 6, D, seed=7)
    keep = padding_mask(SRC_LENGTHS, max_len=6)
    out, _ = mine(x, memory, memory_mask=keep)
    ref = theirs(x, memory, tgt_mask=causal_blocked(5), tgt_is_causal=True, memory_key_padding_mask=~keep[:, 0, 0])
    torch.testing.assert_close(out, ref)


def test_post_norm_stacks_have_no_final_norm() -> None:
    """The paper's post-norm layers already end in a LayerNorm; only pre-norm stacks add one."""
    assert isinstance(Encoder(spec("post", "relu"), 2).norm, nn.Identity)
    assert isinstance(Decoder(spec("pre", "relu"), 2).norm, nn.LayerNorm)


# -- the whole model ------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_transformer_matches_torch_transformer(norm: str) -> None:
    cfg = attnkit.TransformerConfig(
        src_vocab_size=23, tgt_vocab_size=19, d_model=D, n_heads=H, d_ff=FF, n_encoder_layers=2,
        n_decoder_layers=3, dropout=0.0, norm_position=norm, share_embeddings=False, tie_output=False, max_len=16,
    )
    torch.manual_seed(0)
    model = attnkit.Transformer(cfg).double().eval()
    theirs = nn.Transformer(
        d_model=D, nhead=H, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=FF, dropout=0.0,
        batch_first=True, norm_first=norm == "pre", dtype=torch.float64,
    ).eval()
    randomise(theirs, seed=8)
    if norm == "post":
        # nn.Transformer always ends each stack with a LayerNorm; the paper's post-norm does not.
        theirs.encoder.norm = theirs.decoder.norm = None
    state = torch_to_attnkit(theirs.state_dict(), D)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected
    assert all(k.startswith(("src_embed.", "tgt_embed.", "lm_head.")) for k in missing)

    gen = torch.Generator().manual_seed(9)
    src = torch.randint(3, 23, (3, 6), generator=gen)
    src[1, 4:] = cfg.pad_id
    src[2, 1:] = cfg.pad_id
    tgt = torch.randint(3, 19, (3, 5), generator=gen)
    out = model(src, tgt)

    src_pad = src == cfg.pad_id  # torch: True = blocked
    hidden = theirs(
        model.src_embed(src), model.tgt_embed(tgt),
        tgt_mask=causal_blocked(5), tgt_is_causal=True,
        src_key_padding_mask=src_pad, memory_key_padding_mask=src_pad,
    )
    torch.testing.assert_close(out.decoder_hidden, hidden)
    torch.testing.assert_close(out.logits, model.lm_head(hidden))
    memory = theirs.encoder(model.src_embed(src), src_key_padding_mask=src_pad)
    torch.testing.assert_close(out.encoder_hidden[~src_pad], memory[~src_pad])
