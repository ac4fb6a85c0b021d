"""Hugging Face BART <-> attnkit's encoder-decoder, checked against transformers' BartForConditionalGeneration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import attnkit  # noqa: E402
from attnkit.errors import CheckpointError, ConfigError  # noqa: E402
from attnkit.hub.bart import bart_config_from_hf, bart_from_hf, save_hf_bart  # noqa: E402
from attnkit.models.transformer import Transformer, TransformerConfig  # noqa: E402
from seq2seq_batch import hf_logits as seq2seq_hf_logits  # noqa: E402
from seq2seq_batch import assert_greedy_matches_generate, assert_reloads_exactly, padded_batch  # noqa: E402

V, BOS, PAD, EOS = 40, 0, 1, 2  # BART's ids; the decoder starts from EOS


def hf_bart(tie: bool = True, seed: int = 0, decoder_layers: int = 3, scale: bool = False) -> "transformers.BartForConditionalGeneration":
    """A tiny random BART with weights (the logits' bias included) drawn wide enough that every term matters."""
    torch.manual_seed(seed)
    config = transformers.BartConfig(
        vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=decoder_layers, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32, dropout=0.0,
        scale_embedding=scale, tie_word_embeddings=tie, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
        decoder_start_token_id=EOS, forced_eos_token_id=None,
    )
    model = transformers.BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4)
        model.final_logits_bias.normal_(0.0, 0.4)
        if not tie:
            model.lm_head.weight = torch.nn.Parameter(torch.randn(V, 16) * 0.4)
    return model


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return padded_batch(V, PAD, start=EOS, low=3)


def hf_logits(model, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    return seq2seq_hf_logits(model, src, tgt, PAD)


@pytest.mark.parametrize("tie,scale", [(True, False), (False, True)])
def test_logits_match_transformers(tie: bool, scale: bool) -> None:
    hf = hf_bart(tie, scale=scale)
    model = bart_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    c = model.config
    assert (c.tie_output, c.share_embeddings, c.scale_embeddings, c.bos_id, c.pad_id) == (tie, tie, scale, EOS, PAD)
    assert model.src_embed.positions is not model.tgt_embed.positions  # one table per stack
    src, tgt = batch()
    with torch.no_grad():
        out = model(src, tgt).logits  # (B, Tt, V)
    theirs = hf_logits(hf, src, tgt)
    torch.testing.assert_close(out, theirs, atol=1e-5, rtol=0)
    # The check can fail: without the embedding LayerNorm the logits move.
    model.src_embed.norm = None
    with torch.no_grad():
        assert (model(src, tgt).logits - theirs).abs().max() > 1e-2


@pytest.mark.parametrize("tie", [True, False])
def test_export_reloads_in_transformers(tmp_path, tie: bool) -> None:
    hf = hf_bart(tie)
    model = bart_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    save_hf_bart(model, tmp_path / "bart")
    back = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "bart").eval()
    src, tgt = batch()
    torch.testing.assert_close(hf_logits(back, src, tgt), hf_logits(hf, src, tgt), atol=1e-5, rtol=0)
    # attnkit.load recognises the directory, and the state dicts survive the round trip exactly ...
    assert_reloads_exactly(tmp_path / "bart", model)
    # ... except the two leading rows of each position table, which BART never reads (attnkit drops them), and
    # in an untied model shared.weight, which transformers 5 does not read (attnkit writes the encoder's table).
    theirs = hf.state_dict()
    for k, v in back.state_dict().items():
        if k == "model.shared.weight" and not tie:
            assert torch.equal(v, theirs["model.encoder.embed_tokens.weight"])
        elif k.endswith("embed_positions.weight"):
            assert torch.equal(v[2:], theirs[k][2:]) and not v[:2].any(), k
        else:
            assert torch.equal(v, theirs[k]), k


def bart_shaped(**overrides) -> TransformerConfig:
    fields = dict(src_vocab_size=V, tgt_vocab_size=V, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=2, n_decoder_layers=2,
                  dropout=0.0, positional="learned", max_len=32, share_positions=False, embedding_norm=True,
                  scale_embeddings=False, activation="gelu", output_bias=True, pad_id=PAD, bos_id=EOS, eos_id=EOS)
    return TransformerConfig(**{**fields, **overrides})


@pytest.mark.parametrize("overrides", [{}, {"share_positions": True, "output_bias": False, "scale_embeddings": True}])
def test_fresh_bart_shaped_model_exports(tmp_path, overrides: dict) -> None:
    """A Transformer built in attnkit (not imported) with BART's options equals its Hugging Face export; one shared
    position table is written to both stacks, and a model without an output bias gets a zero final_logits_bias."""
    torch.manual_seed(3)
    model = Transformer(bart_shaped(**overrides)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():  # away from the initial values (unit norms, zero biases)
            p.add_(torch.randn_like(p) * 0.3)
    save_hf_bart(model, tmp_path / "bart")
    written = json.loads((tmp_path / "bart" / "config.json").read_text())
    assert written["decoder_start_token_id"] == EOS and written["activation_function"] == "gelu"
    hf = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "bart").eval()
    src, tgt = batch()
    with torch.no_grad():
        ours = model(src, tgt).logits
    torch.testing.assert_close(ours, hf_logits(hf, src, tgt), atol=1e-5, rtol=0)


def test_greedy_decode_matches_generate() -> None:
    hf = hf_bart(seed=5, decoder_layers=2)  # generate's cache assumes the decoder as deep as the encoder
    model = bart_from_hf(hf.config.to_dict(), hf.state_dict()).eval()
    assert_greedy_matches_generate(model, hf, batch()[0], PAD, EOS)


def test_refuses_what_attnkit_does_not_express() -> None:
    base = transformers.BartConfig(vocab_size=V, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                   decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24).to_dict()
    for field, value in (("normalize_before", True), ("add_final_layer_norm", True), ("decoder_attention_heads", 4),
                         ("decoder_ffn_dim", 32), ("activation_function", "tanh"), ("eos_token_id", [2, 3]),
                         ("model_type", "mbart")):
        with pytest.raises(ConfigError, match=field):
            bart_config_from_hf({**base, field: value})
    assert bart_config_from_hf({**base, "normalize_before": False, "add_final_layer_norm": False}).embedding_norm
    for bad, field in (({"norm_position": "pre"}, "norm"), ({"embedding_norm": False}, "embedding_norm"),
                       ({"positional": "sinusoidal"}, "positional"), ({"bias": False}, "bias")):
        with pytest.raises(ConfigError, match=field):
            save_hf_bart(Transformer(bart_shaped(**bad)), "unused")


def test_missing_and_misshapen_weights_are_named() -> None:
    hf = hf_bart()
    state = {k: v for k, v in hf.state_dict().items() if k != "model.decoder.layers.1.encoder_attn.q_proj.bias"}
    with pytest.raises(CheckpointError, match="cross_attn.q_proj"):
        bart_from_hf(hf.config.to_dict(), state)
    state = dict(hf.state_dict())
    state["model.encoder.embed_positions.weight"] = state["model.encoder.embed_positions.weight"][2:]  # no offset rows
    with pytest.raises(CheckpointError, match="embed_positions"):
        bart_from_hf(hf.config.to_dict(), state)


@pytest.mark.parametrize("objective", ["bart", "mass"])
def test_bart_layer_recipe_checkpoint_exports(tmp_path, objective: str) -> None:
    """The quick BART-shaped text-infilling (and MASS) run saves a checkpoint that Hugging Face's BART reproduces."""
    from attnkit.cli.main import main

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "tinyshakespeare").is_dir():
        pytest.skip(f"no tiny Shakespeare under {data}")
    assert main(["train", objective, "--recipe", f"{objective}-shakespeare-bartlayer", "--quick", "--data-root", str(data),
                 "--out", str(tmp_path / "run")]) == 0
    model = attnkit.load(tmp_path / "run" / "model").eval()
    assert model.config.embedding_norm and model.lm_head.bias.abs().max() > 0  # the output bias was trained
    save_hf_bart(model, tmp_path / "hf")
    hf = transformers.BartForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    g = torch.Generator().manual_seed(2)
    c = model.config
    src = torch.randint(4, c.src_vocab_size, (3, 20), generator=g)  # (B, Ts)
    src[1, 12:] = c.pad_id
    tgt = torch.randint(4, c.tgt_vocab_size, (3, 15), generator=g)  # (B, Tt)
    tgt[:, 0] = c.bos_id
    tgt[2, 9:] = c.pad_id
    with torch.no_grad():
        ours = model(src, tgt).logits
        theirs = hf(input_ids=src, attention_mask=(src != c.pad_id).long(), decoder_input_ids=tgt).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
