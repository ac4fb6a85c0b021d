"""Hugging Face Pegasus <-> attnkit's pre-norm encoder-decoder, checked against transformers' PegasusForConditionalGeneration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers.models.pegasus.modeling_pegasus import PegasusSinusoidalPositionalEmbedding  # noqa: E402

import attnkit  # noqa: E402
from attnkit.errors import CheckpointError, ConfigError  # noqa: E402
from attnkit.hub.pegasus import pegasus_config_from_hf, pegasus_from_hf, save_hf_pegasus  # noqa: E402
from attnkit.hub.sinusoidal import halves_order  # noqa: E402
from attnkit.layers.positional import sinusoid_table  # noqa: E402
from attnkit.models.transformer import Transformer, TransformerConfig  # noqa: E402
from seq2seq_batch import assert_greedy_matches_generate, assert_reloads_exactly, hf_logits, moved, padded_batch  # noqa: E402

V, PAD, EOS = 40, 0, 1  # the released models' ids: the pad is also the decoder's start


def hf_pegasus(tie: bool = True, scale: bool = True, seed: int = 0, decoder_layers: int = 3):
    """A tiny random Pegasus with weights (the logits' bias and the final norms included) drawn wide enough that every term matters."""
    torch.manual_seed(seed)
    config = transformers.PegasusConfig(
        vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=decoder_layers, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32, dropout=0.0,
        activation_function="relu", scale_embedding=scale, tie_word_embeddings=tie, pad_token_id=PAD, eos_token_id=EOS,
        decoder_start_token_id=PAD, forced_eos_token_id=None,
    )
    model = transformers.PegasusForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:  # the sinusoid table stays the formula's
                p.normal_(0.0, 0.4)
        model.final_logits_bias.normal_(0.0, 0.4)
        if not tie:  # the stacks' tables and the output layer, each its own
            for module in (model.model.encoder.embed_tokens, model.model.decoder.embed_tokens, model.lm_head):
                module.weight = torch.nn.Parameter(torch.randn(module.weight.shape) * 0.4)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return padded_batch(V, PAD, start=PAD, low=2)  # ids 2..39 above the pad (0) and EOS (1)


def pegasus_shaped(**overrides) -> TransformerConfig:
    """The *-shakespeare recipes' layer at tiny sizes: attnkit's defaults (ReLU, sinusoids, scaled and shared
    embeddings, tied output) with pre-norm layers."""
    fields = dict(src_vocab_size=V, tgt_vocab_size=V, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=2, n_decoder_layers=2,
                  dropout=0.0, max_len=32, norm_position="pre")
    return TransformerConfig(**{**fields, **overrides})


@pytest.mark.parametrize("d_model", [16, 15])
def test_pegasus_table_is_section_3_5_in_halves_order(d_model: int) -> None:
    theirs = PegasusSinusoidalPositionalEmbedding(50, d_model).create_weight()  # (T, d_model)
    torch.testing.assert_close(sinusoid_table(50, d_model)[:, halves_order(d_model)], theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("tie,scale", [(True, True), (False, False)])
def test_logits_match_transformers(tie: bool, scale: bool) -> None:
    hf = hf_pegasus(tie, scale)
    model = pegasus_from_hf(hf.config.to_dict(), hf.state_dict()).eval()  # the state dict holds transformers' tables
    c = model.config
    assert (c.norm_position, c.positional, c.share_embeddings, c.tie_output, c.scale_embeddings) == ("pre", "sinusoidal", tie, tie, scale)
    assert (c.bos_id, c.pad_id, c.eos_id, c.norm_eps, c.embedding_norm, c.output_bias) == (PAD, PAD, EOS, 1e-5, False, True)
    src, tgt = batch()
    with torch.no_grad():
        ours = model(src, tgt).logits  # (B, Tt, V)
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt, PAD), atol=1e-5, rtol=0)


@pytest.mark.parametrize("tie", [True, False])
def test_export_reloads_in_transformers(tmp_path, tie: bool) -> None:
    hf = hf_pegasus(tie)
    model = pegasus_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    save_hf_pegasus(model, tmp_path / "pegasus")
    back, info = transformers.PegasusForConditionalGeneration.from_pretrained(tmp_path / "pegasus", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info  # the position tables and final_logits_bias written
    src, tgt = batch()
    torch.testing.assert_close(hf_logits(back.eval(), src, tgt, PAD), hf_logits(hf, src, tgt, PAD), atol=1e-5, rtol=0)
    assert_reloads_exactly(tmp_path / "pegasus", model)
    # Out and back, every tensor is transformers' own: exactly, but for the tables (attnkit's formula in halves) and,
    # untied, the unread model.shared (written as the encoder's table).
    theirs = hf.state_dict()
    for k, v in back.state_dict().items():
        if k == "model.shared.weight" and not tie:
            continue
        if "embed_positions" in k:
            torch.testing.assert_close(v, theirs[k], atol=1e-6, rtol=0)
        else:
            assert torch.equal(v, theirs[k]), k


@pytest.mark.parametrize("overrides", [{}, {"tie_output": False, "output_bias": True, "activation": "gelu", "scale_embeddings": False},
                                       {"share_embeddings": False, "tie_output": False, "pad_id": 3, "bos_id": 4, "eos_id": 5}])
def test_fresh_transformer_exports(tmp_path, overrides: dict) -> None:
    """A pre-norm Transformer built in attnkit equals its Pegasus export on a padded batch; the export survives
    transformers' own save_pretrained, and attnkit.load reads both directories back to the same model."""
    model = moved(Transformer(pegasus_shaped(**overrides)))
    c = model.config
    save_hf_pegasus(model, tmp_path / "pegasus")
    written = json.loads((tmp_path / "pegasus" / "config.json").read_text())
    assert (written["decoder_start_token_id"], written["pad_token_id"], written["eos_token_id"]) == (c.bos_id, c.pad_id, c.eos_id)
    assert (written["tie_word_embeddings"], written["forced_eos_token_id"]) == (c.tie_output, None)
    hf = transformers.PegasusForConditionalGeneration.from_pretrained(tmp_path / "pegasus").eval()
    src, tgt = padded_batch(V, c.pad_id, start=c.bos_id, low=6)
    with torch.no_grad():
        ours = model(src, tgt).logits
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt, c.pad_id), atol=1e-5, rtol=0)
    hf.save_pretrained(tmp_path / "again")
    for d in ("pegasus", "again"):  # Pegasus always has final_logits_bias: attnkit reads it back as an output bias (zeros)
        back = attnkit.load(tmp_path / d).eval()
        assert back.config == c.replace(output_bias=True), d
        with torch.no_grad():
            torch.testing.assert_close(back(src, tgt).logits, ours, atol=1e-5, rtol=0)
    if c.output_bias:
        assert_reloads_exactly(tmp_path / "pegasus", model)


def test_greedy_decode_matches_generate() -> None:
    hf = hf_pegasus(seed=5, decoder_layers=2)
    model = pegasus_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    assert_greedy_matches_generate(model, hf, batch()[0], PAD, EOS)


def test_refuses_what_attnkit_does_not_express() -> None:
    """Pegasus's own refusals; those of the layer it shares with Marian (positions, norm, biases, widths) are Marian's tests'."""
    base = transformers.PegasusConfig(vocab_size=V, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                      decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24).to_dict()
    for field, value in (("normalize_before", False), ("add_final_layer_norm", False), ("normalize_embedding", True),
                         ("static_position_embeddings", False), ("model_type", "marian")):
        with pytest.raises(ConfigError, match=field):
            pegasus_config_from_hf({**base, field: value})
    # the fields of the released models' configs (transformers 4), at the values that describe Pegasus's own layer
    old = {"normalize_before": True, "add_final_layer_norm": True, "normalize_embedding": False, "static_position_embeddings": True,
           "add_bias_logits": False, "extra_pos_embeddings": 1, "bos_token_id": 0}
    c = pegasus_config_from_hf({**base, **old})
    assert (c.norm_position, c.bos_id, c.pad_id, c.eos_id) == ("pre", 0, 0, 1)
    for bad, field in (({"norm_position": "post"}, "norm_position='post'.*no post-norm option"),
                       ({"share_embeddings": False, "tgt_vocab_size": V + 4, "tie_output": False}, "tgt_vocab_size=44.*one vocab_size"),
                       ({"share_embeddings": False}, "share_embeddings=False.*tie_output=false")):
        with pytest.raises(ConfigError, match=field):
            save_hf_pegasus(Transformer(pegasus_shaped(**bad)), "unused")


def test_a_stored_table_of_another_layout_and_a_missing_final_norm_are_refused() -> None:
    hf = hf_pegasus()
    table = {"model.decoder.embed_positions.weight": sinusoid_table(32, 16)}  # section 3.5's layout: transformers would read it
    with pytest.raises(CheckpointError, match="embed_positions.*not Pegasus's sinusoid table"):
        pegasus_from_hf(hf.config.to_dict(), {**hf.state_dict(), **table})
    without = {k: v for k, v in hf.state_dict().items() if k != "model.encoder.layer_norm.weight"}
    with pytest.raises(CheckpointError, match="encoder.norm.weight"):
        pegasus_from_hf(hf.config.to_dict(), without)


@pytest.mark.slow
def test_denoising_recipe_checkpoint_exports(tmp_path, quick_recipe_run) -> None:
    """The quick bart-shakespeare run (pre-norm, sinusoids) saves a checkpoint that convert picks Pegasus for and Pegasus reproduces."""
    from attnkit.cli.main import main

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "tinyshakespeare").is_dir():
        pytest.skip(f"no tiny Shakespeare under {data}")
    run = quick_recipe_run("bart-shakespeare", data)
    assert run.code == 0, run.err
    assert main(["convert", "--to-hf", str(run.path / "model"), str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "pegasus"
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    model = attnkit.load(run.path / "model").eval()
    assert model.config.norm_position == "pre" and model.config.positional == "sinusoidal"
    hf = transformers.PegasusForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    c = model.config
    src, tgt = padded_batch(c.src_vocab_size, c.pad_id, start=c.bos_id, low=4)
    with torch.no_grad():
        ours = model(src, tgt).logits
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt, c.pad_id), atol=1e-5, rtol=0)
