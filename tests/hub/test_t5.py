"""Hugging Face T5 <-> attnkit's encoder-decoder, checked against transformers' T5ForConditionalGeneration."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

import attnkit  # noqa: E402
from attnkit.errors import CheckpointError, ConfigError  # noqa: E402
from attnkit.hub.t5 import save_hf_t5, t5_config_from_hf, t5_from_hf  # noqa: E402
from attnkit.models.transformer import Transformer, TransformerConfig  # noqa: E402
from seq2seq_batch import hf_logits as seq2seq_hf_logits  # noqa: E402
from seq2seq_batch import assert_greedy_matches_generate, assert_reloads_exactly, padded_batch  # noqa: E402

V, PAD, EOS = 40, 0, 1
PROJS = [("relu", True), ("gated-gelu", False)]  # T5 1.0 (tied, scaled output) and v1.1 (own lm_head, unscaled)


def hf_t5(proj: str, tie: bool, seed: int = 0, decoder_layers: int = 3) -> "transformers.T5ForConditionalGeneration":
    """A tiny random T5 with weights drawn wide enough that every term matters."""
    torch.manual_seed(seed)
    config = transformers.T5Config(
        vocab_size=V, d_model=16, d_kv=4, num_heads=4, d_ff=24, num_layers=2, num_decoder_layers=decoder_layers,
        relative_attention_num_buckets=8, relative_attention_max_distance=12, feed_forward_proj=proj,
        tie_word_embeddings=tie, dropout_rate=0.0, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )
    model = transformers.T5ForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4)
        if not tie:  # v1.1: an output layer of its own
            model.lm_head.weight = torch.nn.Parameter(torch.randn(V, 16) * 0.4)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return padded_batch(V, PAD, start=PAD, low=2)


def hf_logits(model, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    return seq2seq_hf_logits(model, src, tgt, PAD)


@pytest.mark.parametrize("proj,tie", PROJS)
def test_logits_match_transformers(proj: str, tie: bool) -> None:
    hf = hf_t5(proj, tie)
    model = t5_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    assert model.config.ffn == ("gated" if proj.startswith("gated") else "mlp")
    assert model.config.tie_output == tie and (model.config.output_scale != 1.0) == tie
    src, tgt = batch()
    with torch.no_grad():
        out = model(src, tgt).logits  # (B, Tt, V)
    torch.testing.assert_close(out, hf_logits(hf, src, tgt), atol=1e-5, rtol=0)


@pytest.mark.parametrize("proj,tie", PROJS)
def test_export_reloads_in_transformers(tmp_path, proj: str, tie: bool) -> None:
    hf = hf_t5(proj, tie)
    model = t5_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    save_hf_t5(model, tmp_path / "t5")
    back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "t5").eval()
    src, tgt = batch()
    torch.testing.assert_close(hf_logits(back, src, tgt), hf_logits(hf, src, tgt), atol=1e-5, rtol=0)
    # attnkit.load recognises the directory, and the state dicts survive the round trip exactly.
    assert_reloads_exactly(tmp_path / "t5", model)
    theirs = hf.state_dict()
    for k, v in back.state_dict().items():
        assert torch.equal(v, theirs[k]), k


@pytest.mark.parametrize("params", [{"scale": 1.0}, {}])
def test_fresh_t5_shaped_model_exports(tmp_path, params: dict) -> None:
    """A Transformer built in attnkit (not imported) with T5's options equals its Hugging Face export; a scaled
    kernel (``{}``: 1/sqrt(d_k)) is exported with the scale folded into the query weights."""
    config = TransformerConfig(
        src_vocab_size=V, tgt_vocab_size=V, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=2, n_decoder_layers=2,
        dropout=0.0, norm="rms", norm_position="pre", norm_eps=1e-6, bias=False, scale_embeddings=False,
        output_scale=16**-0.5, pad_id=PAD, bos_id=PAD, eos_id=EOS,
        attention={"params": params, "position": {"kind": "t5_bias", "n_buckets": 8, "max_distance": 12}},
    )
    torch.manual_seed(3)
    model = Transformer(config).eval()
    assert model.src_embed.embedding.padding_idx is None  # the decoder's start token is the pad id: a trained row
    save_hf_t5(model, tmp_path / "t5")
    assert json.loads((tmp_path / "t5" / "config.json").read_text())["feed_forward_proj"] == "relu"
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "t5").eval()
    src, tgt = batch()
    with torch.no_grad():
        ours = model(src, tgt).logits
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt), atol=1e-5, rtol=0)


@pytest.mark.parametrize("proj,tie", PROJS)
def test_greedy_decode_matches_generate(proj: str, tie: bool) -> None:
    hf = hf_t5(proj, tie, seed=5, decoder_layers=2)  # generate's cache assumes the decoder as deep as the encoder
    model = t5_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    assert_greedy_matches_generate(model, hf, batch()[0], PAD, EOS)


def test_refuses_what_attnkit_does_not_express() -> None:
    base = transformers.T5Config(vocab_size=V, d_model=16, d_kv=4, num_heads=4, d_ff=24, num_layers=1).to_dict()
    with pytest.raises(ConfigError, match="d_kv"):
        t5_config_from_hf({**base, "d_kv": 8})  # T5 v1.1 small's heads do not split d_model
    with pytest.raises(ConfigError, match="feed_forward_proj"):
        t5_config_from_hf({**base, "feed_forward_proj": "gated-tanhshrink"})
    with pytest.raises(ConfigError, match="eos_token_id"):
        t5_config_from_hf({**base, "eos_token_id": [1, 2]})
    plain = Transformer(TransformerConfig(src_vocab_size=V, tgt_vocab_size=V, d_model=16, n_heads=2, d_ff=32,
                                          n_encoder_layers=1, n_decoder_layers=1))
    with pytest.raises(ConfigError, match="attention.position.kind"):
        save_hf_t5(plain, "unused")


def test_missing_weight_is_named(tmp_path) -> None:
    hf = hf_t5("relu", True)
    state = {k: v for k, v in hf.state_dict().items() if k != "decoder.block.1.layer.1.EncDecAttention.q.weight"}
    with pytest.raises(CheckpointError, match="cross_attn.q_proj"):
        t5_from_hf(hf.config.to_dict(), state)


def test_t5_layer_recipe_checkpoint_exports(tmp_path) -> None:
    """The quick T5-shaped span-corruption run saves a checkpoint that Hugging Face's T5 reproduces."""
    from pathlib import Path

    from attnkit.cli.main import main

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "tinyshakespeare").is_dir():
        pytest.skip(f"no tiny Shakespeare under {data}")
    assert main(["train", "t5", "--recipe", "t5-shakespeare-t5layer", "--quick", "--data-root", str(data),
                 "--out", str(tmp_path / "run")]) == 0
    model = attnkit.load(tmp_path / "run" / "model").eval()
    save_hf_t5(model, tmp_path / "hf")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    src, tgt = batch()
    with torch.no_grad():
        ours = model(src, tgt).logits
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt), atol=1e-5, rtol=0)
