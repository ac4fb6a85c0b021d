"""The encoder-decoder Transformer: shapes, embeddings, tying, checkpoints, cached decoding, presets."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import attnkit
from attnkit.errors import CheckpointError
from attnkit.models.base import CONFIG_NAME, WEIGHTS_NAME



def tiny(**overrides) -> attnkit.TransformerConfig:
    base = dict(src_vocab_size=40, tgt_vocab_size=40, d_model=32, n_heads=4, d_ff=48, n_encoder_layers=2,
                n_decoder_layers=2, dropout=0.0, max_len=32)
    return attnkit.TransformerConfig(**{**base, **overrides})


def build(seed: int = 0, **overrides) -> attnkit.Transformer:
    torch.manual_seed(seed)
    return attnkit.Transformer(tiny(**overrides)).eval()


def batch(cfg: attnkit.TransformerConfig, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(3, cfg.src_vocab_size, (3, 7), generator=gen)
    src[1, 5:] = cfg.pad_id  # right padding
    src[2, 2:] = cfg.pad_id
    tgt = torch.randint(3, cfg.tgt_vocab_size, (3, 6), generator=gen)
    tgt[:, 0] = cfg.bos_id
    return src, tgt


# -- shapes and embeddings ---------------------------------------------------------------
def test_output_shapes() -> None:
    model = build(tgt_vocab_size=29, share_embeddings=False)
    src, tgt = batch(model.config)
    out = model(src, tgt)
    assert out.logits.shape == (3, 6, 29)
    assert out.encoder_hidden.shape == (3, 7, 32)
    assert out.decoder_hidden.shape == (3, 6, 32)
    assert out.attentions is None


def test_need_weights_returns_every_layers_weights() -> None:
    model = build(n_decoder_layers=3)
    src, tgt = batch(model.config)
    att = model(src, tgt, need_weights=True).attentions
    assert [w.shape for w in att["encoder"]] == [(3, 4, 7, 7)] * 2
    assert [w.shape for w in att["decoder_self"]] == [(3, 4, 6, 6)] * 3
    assert [w.shape for w in att["decoder_cross"]] == [(3, 4, 6, 7)] * 3
    # Source padding gets no cross-attention weight; the causal mask no future weight.
    assert (att["decoder_cross"][0][2, :, :, 2:] == 0).all()
    assert (att["decoder_self"][0][..., 0, 1:] == 0).all()


@pytest.mark.parametrize("scale", [True, False])
def test_embeddings_are_scaled_by_sqrt_d_model(scale: bool) -> None:
    """Section 3.4: "In the embedding layers, we multiply those weights by sqrt(d_model)"."""
    model = build(scale_embeddings=scale)
    ids = torch.tensor([[5, 6, 7]])
    table = model.src_embed.embedding.weight
    pos = torch.tensor([[math.sin(p) if j == 0 else math.cos(p) for j in range(2)] for p in range(3)])
    out = model.src_embed(ids)  # (1, 3, d_model)
    factor = math.sqrt(32) if scale else 1.0
    torch.testing.assert_close(out[0, :, :2], table[5:8, :2] * factor + pos)


def test_learned_positions_past_max_len_are_a_clear_error() -> None:
    model = build(positional="learned", max_len=8)
    src, tgt = torch.full((1, 9), 5), torch.full((1, 3), 5)
    with pytest.raises(ValueError, match="9 positions .* max_len=8"):
        model(src, tgt)


def test_pad_embedding_is_zero() -> None:
    model = build()
    assert (model.src_embed.embedding.weight[model.config.pad_id] == 0).all()


def test_tied_weights_share_storage_and_are_counted_once() -> None:
    model = build()
    ptr = model.src_embed.embedding.weight.data_ptr()
    assert model.tgt_embed.embedding.weight.data_ptr() == ptr
    assert model.lm_head.weight.data_ptr() == ptr
    untied = build(share_embeddings=False, tie_output=False)
    assert len({untied.src_embed.embedding.weight.data_ptr(), untied.tgt_embed.embedding.weight.data_ptr(),
                untied.lm_head.weight.data_ptr()}) == 3
    assert untied.num_parameters() - model.num_parameters() == 2 * 40 * 32
    out_tied = build(share_embeddings=False, tie_output=True)
    assert out_tied.lm_head.weight is out_tied.tgt_embed.embedding.weight
    assert out_tied.src_embed.embedding.weight is not out_tied.tgt_embed.embedding.weight


# -- save / load -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [{}, {"share_embeddings": False, "tie_output": False, "tgt_vocab_size": 33},
     {"share_embeddings": False, "tie_output": True},
     {"positional": "learned", "norm_position": "pre", "activation": "gelu"},
     {"attention": {"kind": "additive"}}],
    ids=["tied", "untied", "output-tied", "learned-prenorm", "additive"],
)
def test_save_and_load_round_trip(tmp_path: Path, overrides: dict) -> None:
    model = build(**overrides)
    src, tgt = batch(model.config)
    expected = model(src, tgt).logits
    model.save_pretrained(tmp_path / "ckpt")
    loaded = attnkit.load(tmp_path / "ckpt").eval()
    assert isinstance(loaded, attnkit.Transformer)
    assert loaded.config == model.config
    assert torch.equal(loaded(src, tgt).logits, expected)
    if model.config.tie_output:
        assert loaded.lm_head.weight.data_ptr() == loaded.tgt_embed.embedding.weight.data_ptr()
    again = attnkit.Transformer.from_pretrained(tmp_path / "ckpt")
    assert torch.equal(again.eval()(src, tgt).logits, expected)


def test_save_overwrites_an_existing_checkpoint(tmp_path: Path) -> None:
    build(seed=0).save_pretrained(tmp_path / "ckpt")
    second = build(seed=1)
    second.save_pretrained(tmp_path / "ckpt")
    src, tgt = batch(second.config)
    assert torch.equal(attnkit.load(tmp_path / "ckpt").eval()(src, tgt).logits, second(src, tgt).logits)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "ckpt"
    build().save_pretrained(path)
    return path


def _expect_checkpoint_error(path: Path, *words: str) -> str:
    with pytest.raises(CheckpointError) as info:
        attnkit.load(path)
    msg = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


def test_load_missing_directory(tmp_path: Path) -> None:
    _expect_checkpoint_error(tmp_path / "nope", "does not exist", "nope")


def test_load_a_file_instead_of_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    _expect_checkpoint_error(tmp_path / "file", "not a checkpoint directory")


def test_load_directory_without_config(checkpoint: Path) -> None:
    (checkpoint / CONFIG_NAME).unlink()
    _expect_checkpoint_error(checkpoint, CONFIG_NAME)


def test_load_corrupt_config_json(checkpoint: Path) -> None:
    (checkpoint / CONFIG_NAME).write_text('{"model_type": "transformer", "d_model": ')
    _expect_checkpoint_error(checkpoint, CONFIG_NAME, "not valid JSON")


def test_load_unknown_config_key(checkpoint: Path) -> None:
    data = json.loads((checkpoint / CONFIG_NAME).read_text())
    data["d_modle"] = 32
    (checkpoint / CONFIG_NAME).write_text(json.dumps(data))
    _expect_checkpoint_error(checkpoint, "d_modle", CONFIG_NAME)


def test_load_invalid_config_value(checkpoint: Path) -> None:
    data = json.loads((checkpoint / CONFIG_NAME).read_text())
    data["n_heads"] = 5
    (checkpoint / CONFIG_NAME).write_text(json.dumps(data))
    _expect_checkpoint_error(checkpoint, "n_heads=5", CONFIG_NAME)


def test_load_unknown_model_type(checkpoint: Path) -> None:
    data = json.loads((checkpoint / CONFIG_NAME).read_text())
    data["model_type"] = "gpt7"
    (checkpoint / CONFIG_NAME).write_text(json.dumps(data))
    _expect_checkpoint_error(checkpoint, "'gpt7'")


def test_load_missing_weights(checkpoint: Path) -> None:
    (checkpoint / WEIGHTS_NAME).unlink()
    _expect_checkpoint_error(checkpoint, WEIGHTS_NAME, "does not exist")


def test_load_truncated_weights(checkpoint: Path) -> None:
    weights = checkpoint / WEIGHTS_NAME
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    _expect_checkpoint_error(checkpoint, WEIGHTS_NAME, "truncated or corrupt")


def test_load_garbage_weights(checkpoint: Path) -> None:
    (checkpoint / WEIGHTS_NAME).write_bytes(b"\x00" * 5)
    _expect_checkpoint_error(checkpoint, WEIGHTS_NAME, "truncated or corrupt")


def test_load_wrong_shaped_tensor(checkpoint: Path) -> None:
    weights = checkpoint / WEIGHTS_NAME
    state = load_file(str(weights))
    state["encoder.layers.0.ffn.w1.weight"] = torch.zeros(7, 32)
    save_file(state, str(weights))
    _expect_checkpoint_error(checkpoint, "encoder.layers.0.ffn.w1.weight", "(7, 32)", "(48, 32)")


def test_load_missing_and_unexpected_tensors(checkpoint: Path) -> None:
    weights = checkpoint / WEIGHTS_NAME
    state = load_file(str(weights))
    del state["decoder.layers.1.ffn.w2.bias"]
    save_file(state, str(weights))
    _expect_checkpoint_error(checkpoint, "missing", "decoder.layers.1.ffn.w2.bias")
    state["decoder.layers.1.ffn.w2.bias"] = torch.zeros(32)
    state["decoder.layers.9.ffn.w2.bias"] = torch.zeros(32)
    save_file(state, str(weights))
    _expect_checkpoint_error(checkpoint, "unexpected", "decoder.layers.9.ffn.w2.bias")


# -- cached incremental decoding -----------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, {"norm_position": "pre", "positional": "learned"}], ids=["post", "pre-learned"])
def test_cached_decoding_matches_teacher_forcing(overrides: dict) -> None:
    model = build(**overrides)
    src, tgt = batch(model.config)
    with torch.no_grad():
        expected = model(src, tgt).logits  # (B, Tt, V)
        src_mask = model.source_mask(src)
        memory, _ = model.encode(src, src_mask)
        caches = model.new_caches(max_len=tgt.shape[1])
        steps = [model.decode(tgt[:, t : t + 1], memory, src_mask, caches=caches)[0] for t in range(tgt.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected, rtol=1e-5, atol=1e-5)


def test_decode_offset_defaults_to_the_cached_length() -> None:
    model = build()
    src, tgt = batch(model.config)
    torch.testing.assert_close(model.tgt_embed(tgt[:, 2:], offset=2), model.tgt_embed(tgt)[:, 2:])
    with torch.no_grad():
        src_mask = model.source_mask(src)
        memory, _ = model.encode(src, src_mask)
        implicit, explicit = model.new_caches(6), model.new_caches(6)
        for t in range(tgt.shape[1]):
            a = model.decode(tgt[:, t : t + 1], memory, src_mask, caches=implicit)[0]
            b = model.decode(tgt[:, t : t + 1], memory, src_mask, caches=explicit, offset=t)[0]
            assert torch.equal(a, b)


def test_cached_decoding_in_two_chunks_and_after_reorder() -> None:
    model = build()
    src, tgt = batch(model.config)
    with torch.no_grad():
        order = torch.tensor([2, 2, 0])
        expected = model(src[order], tgt[order]).logits
        src_mask = model.source_mask(src)
        memory, _ = model.encode(src, src_mask)
        caches = model.new_caches(max_len=6)
        first, _, _ = model.decode(tgt[:, :2], memory, src_mask, caches=caches)
        attnkit.attention.reorder_caches(caches, order)  # beam search keeps hypotheses 2, 2, 0
        rest, _, _ = model.decode(tgt[order, 2:], memory[order], src_mask[order], caches=caches)
    torch.testing.assert_close(first[order], expected[:, :2], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rest, expected[:, 2:], rtol=1e-5, atol=1e-5)


# -- presets ---------------------------------------------------------------------------------------
def test_paper_presets_have_table_3_sizes() -> None:
    base, big = attnkit.preset("transformer-base"), attnkit.preset("transformer-big")
    for cfg in (base, big):
        assert cfg.n_encoder_layers == cfg.n_decoder_layers == 6
        assert cfg.norm_position == "post" and cfg.positional == "sinusoidal"
        assert cfg.share_embeddings and cfg.tie_output and cfg.scale_embeddings
    assert (base.d_model, base.n_heads, base.d_ff, base.dropout, base.head_dim) == (512, 8, 2048, 0.1, 64)
    assert (big.d_model, big.n_heads, big.d_ff, big.dropout, big.head_dim) == (1024, 16, 4096, 0.3, 64)


def test_base_model_has_about_65m_parameters() -> None:
    """Table 3 lists 65M for the base model with a shared 37000-token BPE vocabulary (section 5.1)."""
    cfg = attnkit.preset("transformer-base", src_vocab_size=37000, tgt_vocab_size=37000)
    with torch.device("meta"):  # count without allocating
        model = attnkit.Transformer(cfg)
    n = model.num_parameters()
    assert 60e6 <= n <= 65e6, n
    d, ff, v = 512, 2048, 37000
    attn, ffn, ln = 4 * (d * d + d), 2 * d * ff + ff + d, 2 * d
    assert n == v * d + 6 * (attn + ffn + 2 * ln) + 6 * (2 * attn + ffn + 3 * ln)


def test_preset_lookup_is_exact_and_takes_overrides() -> None:
    assert attnkit.preset("transformer-tiny", d_ff=96).d_ff == 96
    with pytest.raises(ValueError, match="'transformer-bse'"):
        attnkit.preset("transformer-bse")
    with pytest.raises(ValueError, match="n_heads"):
        attnkit.preset("transformer-tiny", n_heads=5)


def test_padding_bias_values() -> None:
    from attnkit.attention.masks import padding_bias

    keep = torch.tensor([[True, True, False], [False, False, False]])[:, None, None, :]
    bias = padding_bias(keep, torch.bfloat16)
    assert bias.dtype == torch.bfloat16 and bias.shape == (2, 1, 1, 3)
    assert bias[0, 0, 0].tolist() == [0.0, 0.0, float("-inf")]
    assert bias[1].eq(0).all()  # no real key: attend evenly, never NaN


@pytest.mark.parametrize("overrides", [{}, {"norm_position": "pre"}])
def test_forward_source_bias_equals_the_per_layer_mask(overrides: dict) -> None:
    """``forward`` shares one source bias across layers; the mask path (taken with
    ``need_weights``) gives the same logits and gradients on a padded batch."""
    model = build(**overrides).eval()
    src, tgt = batch(model.config)
    assert (src == model.config.pad_id).any()  # the batch has padding
    assert model.source_bias(model.source_mask(src), model.lm_head.weight) is not None
    fast = model(src, tgt).logits
    slow = model(src, tgt, need_weights=True).logits
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-6)
    g = torch.randn_like(fast)
    params = [p for p in model.parameters() if p.requires_grad]
    for a, b in zip(torch.autograd.grad(fast, params, g, allow_unused=True), torch.autograd.grad(slow, params, g, allow_unused=True)):
        if a is not None or b is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.source_bias(model.source_mask(src), model.lm_head.weight).dtype == torch.bfloat16
    windowed = build(attention={"kind": "sliding_window", "params": {"window": 4}})  # no bias in place of a mask
    assert windowed.source_bias(windowed.source_mask(src), windowed.lm_head.weight) is None
