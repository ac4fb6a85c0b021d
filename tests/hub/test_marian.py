"""Hugging Face Marian <-> attnkit's encoder-decoder, checked against transformers' MarianMTModel."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding  # noqa: E402

import attnkit  # noqa: E402
import attnkit.hub.sinusoidal as sinusoidal  # noqa: E402
from attnkit.errors import CheckpointError, ConfigError  # noqa: E402
from attnkit.hub.marian import marian_config_from_hf, marian_from_hf, save_hf_marian  # noqa: E402
from attnkit.hub.sinusoidal import halves_order  # noqa: E402
from attnkit.layers.positional import sinusoid_table  # noqa: E402
from attnkit.models.transformer import Transformer, TransformerConfig  # noqa: E402
from seq2seq_batch import hf_logits as seq2seq_hf_logits  # noqa: E402
from seq2seq_batch import assert_greedy_matches_generate, assert_reloads_exactly, moved, padded_batch  # noqa: E402

V, EOS, PAD = 40, 0, 39  # OPUS-MT's ids: EOS 0, the pad the last id and the decoder's start
DECODER_V = 44  # the target vocabulary where the stacks have tables of their own


def hf_marian(share: bool = True, tie: bool = True, scale: bool = True, seed: int = 0,
              decoder_layers: int = 3) -> "transformers.MarianMTModel":
    """A tiny random Marian with weights (the logits' bias included) drawn wide enough that every term matters."""
    torch.manual_seed(seed)
    config = transformers.MarianConfig(
        vocab_size=V, decoder_vocab_size=V if share else DECODER_V, share_encoder_decoder_embeddings=share, d_model=16,
        encoder_layers=2, decoder_layers=decoder_layers, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32, dropout=0.0, activation_function="swish",
        scale_embedding=scale, tie_word_embeddings=tie, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
        forced_eos_token_id=None,
    )
    model = transformers.MarianMTModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" not in name:  # the sinusoid table stays the formula's
                p.normal_(0.0, 0.4)
        model.final_logits_bias.normal_(0.0, 0.4)
        if not tie:
            model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape) * 0.4)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return padded_batch(PAD, PAD, start=PAD, low=1)  # ids 1..38 between EOS (0) and the pad (39)


def hf_logits(model, src: torch.Tensor, tgt: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    return seq2seq_hf_logits(model, src, tgt, pad)


@pytest.mark.parametrize("d_model", [16, 15])
def test_marian_table_is_section_3_5_in_halves_order(d_model: int) -> None:
    """transformers' own table (sines first, then cosines) is attnkit's interleaved one with its features renumbered."""
    theirs = MarianSinusoidalPositionalEmbedding(50, d_model).create_weight()  # (T, d_model)
    ours = sinusoid_table(50, d_model)
    torch.testing.assert_close(ours[:, halves_order(d_model)], theirs, atol=1e-6, rtol=0)
    assert (ours - theirs).abs().max() > 0.5  # the two layouts differ


@pytest.mark.parametrize("share,tie,scale", [(True, True, True), (True, False, False), (False, True, True), (False, False, False)])
def test_logits_match_transformers(share: bool, tie: bool, scale: bool) -> None:
    hf = hf_marian(share, tie, scale)
    model = marian_from_hf(hf.config.to_dict(), hf.state_dict()).eval()  # the state dict holds transformers' tables
    c = model.config
    # untied, transformers 5 reads a table per stack (here drawn apart from model.shared): attnkit's stacks have their own
    assert (c.share_embeddings, c.tie_output, c.scale_embeddings, c.positional) == (share and tie, tie, scale, "sinusoidal")
    assert (c.bos_id, c.pad_id, c.eos_id, c.activation, c.tgt_vocab_size) == (PAD, PAD, EOS, "silu", V if share else DECODER_V)
    src, tgt = batch()
    with torch.no_grad():
        ours = model(src, tgt).logits  # (B, Tt, V)
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt), atol=1e-5, rtol=0)


@pytest.mark.parametrize("share,tie", [(True, True), (True, False), (False, True), (False, False)])
def test_export_reloads_in_transformers(tmp_path, share: bool, tie: bool) -> None:
    hf = hf_marian(share, tie)
    model = marian_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    save_hf_marian(model, tmp_path / "marian")
    back = transformers.MarianMTModel.from_pretrained(tmp_path / "marian").eval()
    src, tgt = batch()
    torch.testing.assert_close(hf_logits(back, src, tgt), hf_logits(hf, src, tgt), atol=1e-5, rtol=0)
    assert_reloads_exactly(tmp_path / "marian", model)
    # The renumbering out and back is exact: every tensor is transformers' own (the position tables rebuilt), but
    # for the unread model.shared of a model whose stacks have tables of their own, which is not written.
    theirs = hf.state_dict()
    assert set(theirs) - set(back.state_dict()) <= {"model.shared.weight"}
    for k, v in back.state_dict().items():
        assert torch.equal(v, theirs[k]), k


def marian_shaped(**overrides) -> TransformerConfig:
    """The translation Transformer (attnkit's defaults: ReLU, post-norm, sinusoids, scaled and shared embeddings)."""
    fields = dict(src_vocab_size=V, tgt_vocab_size=V, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=2, n_decoder_layers=2,
                  dropout=0.0, max_len=32)
    return TransformerConfig(**{**fields, **overrides})


@pytest.mark.parametrize("overrides", [{}, {"tie_output": False, "output_bias": True}, {"share_embeddings": False, "tgt_vocab_size": DECODER_V, "tie_output": False,
                                            "activation": "gelu", "output_bias": True, "scale_embeddings": False,
                                            "attention": {"params": {"backend": "efficient"}}}])
def test_fresh_transformer_exports(tmp_path, overrides: dict) -> None:
    """A Transformer built in attnkit equals its Hugging Face export on a padded batch; the export survives
    transformers' own save_pretrained (which drops the position tables and rebuilds them on load)."""
    model = moved(Transformer(marian_shaped(**overrides)))
    c = model.config
    save_hf_marian(model, tmp_path / "marian")
    written = json.loads((tmp_path / "marian" / "config.json").read_text())
    assert (written["decoder_start_token_id"], written["pad_token_id"], written["eos_token_id"]) == (c.bos_id, c.pad_id, c.eos_id)
    assert (written["share_encoder_decoder_embeddings"], written["tie_word_embeddings"]) == (c.share_embeddings, c.tie_output)
    hf = transformers.MarianMTModel.from_pretrained(tmp_path / "marian").eval()
    src, tgt = padded_batch(min(c.src_vocab_size, c.tgt_vocab_size), c.pad_id, start=c.bos_id, low=3)
    with torch.no_grad():
        ours = model(src, tgt).logits
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt, c.pad_id), atol=1e-5, rtol=0)
    hf.save_pretrained(tmp_path / "again")
    again = transformers.MarianMTModel.from_pretrained(tmp_path / "again").eval()
    torch.testing.assert_close(hf_logits(again, src, tgt, c.pad_id), ours, atol=1e-5, rtol=0)


def test_without_the_renumbering_the_logits_differ(tmp_path, monkeypatch) -> None:
    """The check can fail: written in attnkit's feature order, the weights meet Marian's table and the logits move."""
    model = moved(Transformer(marian_shaped()))
    monkeypatch.setattr(sinusoidal, "halves_order", lambda d: torch.arange(d))
    save_hf_marian(model, tmp_path / "marian")
    hf = transformers.MarianMTModel.from_pretrained(tmp_path / "marian").eval()
    src, tgt = padded_batch(V, 0, start=1, low=3)
    with torch.no_grad():
        assert (model(src, tgt).logits - hf_logits(hf, src, tgt, 0)).abs().max() > 1e-2


def test_greedy_decode_matches_generate() -> None:
    hf = hf_marian(seed=5, decoder_layers=2)
    model = marian_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    assert_greedy_matches_generate(model, hf, batch()[0], PAD, EOS)


def test_refuses_what_attnkit_does_not_express() -> None:
    base = transformers.MarianConfig(vocab_size=V, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                     decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, pad_token_id=PAD,
                                     decoder_start_token_id=PAD, eos_token_id=EOS).to_dict()
    for field, value in (("normalize_before", True), ("normalize_embedding", True), ("static_position_embeddings", False),
                         ("decoder_attention_heads", 4), ("decoder_ffn_dim", 32), ("activation_function", "tanh"),
                         ("eos_token_id", [0, 3]), ("decoder_vocab_size", 50), ("model_type", "bart")):
        with pytest.raises(ConfigError, match=field):
            marian_config_from_hf({**base, field: value})
    # the fields of transformers 4's Marian configs, at the values that describe Marian's own layer
    old = {"normalize_before": False, "normalize_embedding": False, "static_position_embeddings": True, "add_bias_logits": False}
    assert marian_config_from_hf({**base, **old}).norm_position == "post"
    for bad, field in (({"norm_position": "pre"}, "norm_position='pre'.*no pre-norm option"),
                       ({"positional": "learned"}, "positional"), ({"embedding_norm": True}, "embedding_norm"),
                       ({"bias": False}, "bias"), ({"norm": "rms"}, "norm"), ({"norm_eps": 1e-6}, "norm_eps"),
                       ({"attention": {"params": {"scale": 1.0}}}, "attention.params"),
                       ({"activation": "gelu_sigmoid"}, "activation")):
        with pytest.raises(ConfigError, match=field):
            save_hf_marian(Transformer(marian_shaped(**bad)), "unused")


def test_other_position_tables_and_missing_weights_are_refused() -> None:
    hf = hf_marian()
    state = dict(hf.state_dict())
    key = "model.encoder.embed_positions.weight"
    state[key] = sinusoid_table(32, 16)  # section 3.5's layout, which transformers would read as it is
    with pytest.raises(CheckpointError, match="embed_positions.*not Marian's sinusoid table"):
        marian_from_hf(hf.config.to_dict(), state)
    state[key] = hf.state_dict()[key][:20]
    with pytest.raises(CheckpointError, match="embed_positions.*shape"):
        marian_from_hf(hf.config.to_dict(), state)
    state = {k: v for k, v in hf.state_dict().items() if k != "model.decoder.layers.1.encoder_attn.q_proj.bias"}
    with pytest.raises(CheckpointError, match="cross_attn.q_proj"):
        marian_from_hf(hf.config.to_dict(), state)
    state = dict(hf.state_dict())
    state["model.encoder.layers.0.fc2.weight"] = state["model.encoder.layers.0.fc2.weight"][:8]
    with pytest.raises(CheckpointError, match="fc2.weight"):
        marian_from_hf(hf.config.to_dict(), state)


@pytest.mark.slow
def test_translation_recipe_checkpoint_exports(tmp_path, quick_recipe_run) -> None:
    """The quick multi30k-de-en run (sinusoids, post-norm, a pinned SDPA backend) saves a checkpoint that Marian reproduces."""
    from pathlib import Path

    from attnkit.cli.main import main

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "multi30k" / "train.de.gz").is_file():
        pytest.skip(f"no Multi30k under {data}")
    run = quick_recipe_run("multi30k-de-en", data)
    assert run.code == 0, run.err
    assert main(["convert", "--to-hf", str(run.path / "model"), str(tmp_path / "hf")]) == 0
    model = attnkit.load(run.path / "model").eval()
    hf = transformers.MarianMTModel.from_pretrained(tmp_path / "hf").eval()
    c = model.config
    src, tgt = padded_batch(min(c.src_vocab_size, c.tgt_vocab_size), c.pad_id, start=c.bos_id, low=4)
    with torch.no_grad():
        ours = model(src, tgt).logits
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt, c.pad_id), atol=1e-5, rtol=0)
