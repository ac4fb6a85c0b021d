"""``attnkit convert`` of encoder-decoder Transformers (to T5, BART, Marian and Pegasus) and XLNet, checked against transformers' own classes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import attnkit  # noqa: E402
from attnkit.cli.main import main  # noqa: E402
from attnkit.models.bert import BertModel  # noqa: E402
from attnkit.models.transformer import Transformer, TransformerConfig  # noqa: E402
from attnkit.models.xlnet import XLNetConfig, XLNetLM  # noqa: E402

V = 40
BASE = dict(src_vocab_size=V, tgt_vocab_size=V, d_model=16, n_heads=2, d_ff=32, n_encoder_layers=2, n_decoder_layers=2, dropout=0.0)
# T5's layer (the t5-shakespeare-t5layer recipe's options); ids: pad 0 (the decoder's start), EOS 1
T5 = dict(norm="rms", norm_position="pre", norm_eps=1e-6, bias=False, scale_embeddings=False, output_scale=16**-0.5,
          pad_id=0, bos_id=0, eos_id=1, attention={"position": {"kind": "t5_bias", "n_buckets": 8, "max_distance": 12}})
# BART's layer (the *-shakespeare-bartlayer recipes' options); ids: pad 1, EOS 2 (the decoder's start)
BART = dict(positional="learned", max_len=32, share_positions=False, embedding_norm=True, scale_embeddings=False,
            activation="gelu", output_bias=True, pad_id=1, bos_id=2, eos_id=2)
# the layer of "Attention Is All You Need" (attnkit's defaults, the multi30k-de-en and demo recipes' options)
MARIAN: dict = {}
# the same with pre-norm layers (the bart-shakespeare, mass-shakespeare and t5-shakespeare recipes' options)
PEGASUS = dict(norm_position="pre")
NAMES = {"t5": "T5", "bart": "BART", "marian": "Marian", "pegasus": "Pegasus"}


def saved_transformer(path: Path, **fields) -> Transformer:
    """A tiny Transformer with weights moved off their initial values (unit norms, zero biases), saved as attnkit's ``path``."""
    torch.manual_seed(3)
    model = Transformer(TransformerConfig(**{**BASE, **fields})).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(path)
    return model


def batch(c: TransformerConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded sources (B, Ts) and decoder inputs (B, Tt) that start from the decoder's start id."""
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, V, (3, 20), generator=g)  # (B, Ts)
    src[1, 14:] = c.pad_id
    src[2, 5:] = c.pad_id
    tgt = torch.randint(3, V, (3, 18), generator=g)  # (B, Tt)
    tgt[:, 0] = c.bos_id
    tgt[2, 10:] = c.pad_id
    return src, tgt


def refused(capsys, argv: list) -> str:
    """Run ``attnkit argv``; it must exit 2 with one error line, which is returned."""
    capsys.readouterr()  # what came before (e.g. transformers' progress bars)
    assert main([str(a) for a in argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("attnkit: error: "), err
    return err[0]


@pytest.mark.parametrize("family, fields, hf_class", [("t5", T5, "T5ForConditionalGeneration"),
                                                      ("bart", BART, "BartForConditionalGeneration"),
                                                      ("marian", MARIAN, "MarianMTModel"),
                                                      ("pegasus", PEGASUS, "PegasusForConditionalGeneration")])
def test_seq2seq_converts_to_its_family_and_back(tmp_path, capsys, family, fields, hf_class) -> None:
    model = saved_transformer(tmp_path / "ak", **fields)
    assert main(["convert", "--to-hf", str(tmp_path / "ak"), str(tmp_path / "hf")]) == 0  # the family from the config
    assert f"Hugging Face {NAMES[family]} format" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == family
    hf = getattr(transformers, hf_class).from_pretrained(tmp_path / "hf").eval()
    src, tgt = batch(model.config)
    with torch.no_grad():
        ours = model(src, tgt).logits  # (B, Tt, V)
        theirs = hf(input_ids=src, attention_mask=(src != model.config.pad_id).long(), decoder_input_ids=tgt).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    # --family named explicitly writes the same; an existing Hugging Face DST is replaced only with --overwrite
    assert "--overwrite" in refused(capsys, ["convert", "--to-hf", "--family", family, tmp_path / "ak", tmp_path / "hf"])
    assert main(["convert", "--to-hf", "--overwrite", "--family", family, str(tmp_path / "ak"), str(tmp_path / "hf")]) == 0
    # --to-attnkit reads the Hugging Face directory back into a model with the same logits (T5's import keeps the
    # query scale folded into the weights: another config, the same function)
    assert main(["convert", "--to-attnkit", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    assert json.loads((tmp_path / "back" / "config.json").read_text())["model_type"] == "transformer"
    back = attnkit.load(tmp_path / "back").eval()
    assert isinstance(back, Transformer)
    with torch.no_grad():
        torch.testing.assert_close(back(src, tgt).logits, theirs, atol=1e-5, rtol=0)


def test_sinusoidal_transformer_is_refused_in_one_line_by_the_families_that_do_not_fit(tmp_path, capsys) -> None:
    saved_transformer(tmp_path / "pre", **PEGASUS)
    line = refused(capsys, ["convert", "--to-hf", "--family", "marian", tmp_path / "pre", tmp_path / "hf"])
    assert "norm_position='pre'" in line and "no pre-norm option" in line and "--family pegasus" in line, line
    saved_transformer(tmp_path / "post", **MARIAN)
    line = refused(capsys, ["convert", "--to-hf", "--family", "pegasus", tmp_path / "post", tmp_path / "hf"])
    assert "norm_position='post'" in line and "no post-norm option" in line and "--family marian" in line, line
    for family in ("t5", "bart"):  # each names the family that fits
        for src, fits in (("pre", "pegasus"), ("post", "marian")):
            line = refused(capsys, ["convert", "--to-hf", "--family", family, tmp_path / src, tmp_path / "hf"])
            assert ("positional" in line or "position.kind" in line) and f"--family {fits}" in line, line
    saved_transformer(tmp_path / "rms", **PEGASUS, norm="rms")  # sinusoids, but RMS norm: no family expresses it
    line = refused(capsys, ["convert", "--to-hf", tmp_path / "rms", tmp_path / "hf"])
    assert "only in Marian (post-norm) and Pegasus (pre-norm)" in line and "norm='rms' is not Pegasus-shaped" in line, line
    assert "multi30k-de-en" in line and "t5-shakespeare recipe (Pegasus)" in line, line
    line = refused(capsys, ["convert", "--to-hf", "--family", "pegasus", tmp_path / "rms", tmp_path / "hf"])
    assert "norm='rms'" in line and "train it with the bart-shakespeare, mass-shakespeare or t5-shakespeare recipe" in line, line
    assert not (tmp_path / "hf").exists()


def test_translation_transformer_exports_with_its_tokenizer(tmp_path, capsys) -> None:
    """The exported Marian directory holds the tokenizer and translation.json, so attnkit translates from it (and from
    its conversion back) as from the original, with the recorded decoding settings."""
    from attnkit.data.tokenizer import char_tokenizer

    tok = char_tokenizer("abcdefghij")  # 4 specials + 10 letters
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(**{**BASE, "src_vocab_size": 14, "tgt_vocab_size": 14}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    info = json.dumps({"src": "xx", "tgt": "yy", "beam_size": 1, "length_penalty": 0.0})
    model.save_pretrained(tmp_path / "ak", tokenizer=tok, extra_files={"translation.json": info})
    assert main(["convert", "--to-hf", str(tmp_path / "ak"), str(tmp_path / "hf")]) == 0
    assert main(["convert", "--to-hf", "--overwrite", str(tmp_path / "ak"), str(tmp_path / "hf")]) == 0  # translation.json is a model file
    assert main(["convert", "--to-attnkit", str(tmp_path / "hf"), str(tmp_path / "back")]) == 0
    for d in ("hf", "back"):
        for name in ("tokenizer.json", "translation.json"):
            assert (tmp_path / d / name).read_bytes() == (tmp_path / "ak" / name).read_bytes(), (d, name)
    outputs = []
    for d in ("ak", "hf", "back"):
        capsys.readouterr()
        assert main(["translate", "--model", str(tmp_path / d), "--device", "cpu", "abc", "jihgf"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0].splitlines()) == 2


def test_wrong_family_is_refused_naming_the_right_ones(tmp_path, capsys) -> None:
    saved_transformer(tmp_path / "t5", **T5)
    BertModel(attnkit.bert_preset("bert-test")).save_pretrained(tmp_path / "bert")
    cases = [("bert", "t5", "t5|bart|marian|pegasus"), ("xlnet", "t5", "t5|bart|marian|pegasus"), ("t5", "bert", "bert|roberta|albert|electra"),
             ("bart", "t5", "--family t5")]  # a T5-shaped model as BART: the family it fits
    for family, src, names in cases:
        line = refused(capsys, ["convert", "--to-hf", "--family", family, tmp_path / src, tmp_path / "hf"])
        assert names in line, line
    assert "leave out --family" in refused(capsys, ["convert", "--to-attnkit", "--family", "t5", tmp_path / "t5", tmp_path / "ak"])
    assert not (tmp_path / "hf").exists() and not (tmp_path / "ak").exists()


def test_xlnet_converts_to_xlnet_lm_head_model(tmp_path, capsys) -> None:
    torch.manual_seed(0)
    model = XLNetLM(XLNetConfig(vocab_size=80, d_model=32, n_layers=2, n_heads=4, d_ff=48, dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path / "ak")
    assert main(["convert", "--to-hf", str(tmp_path / "ak"), str(tmp_path / "hf")]) == 0
    assert "Hugging Face XLNet format" in capsys.readouterr().out
    hf = transformers.XLNetLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(6, 80, (2, 11), generator=torch.Generator().manual_seed(1))  # (B, T)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, hf(ids).logits, atol=1e-5, rtol=0)  # the content stream
    # the Hugging Face XLNet directory (model type "xlnet", also an attnkit type) is replaced only with --overwrite
    assert "--overwrite" in refused(capsys, ["convert", "--to-hf", "--family", "xlnet", tmp_path / "ak", tmp_path / "hf"])
    assert main(["convert", "--to-hf", "--overwrite", str(tmp_path / "ak"), str(tmp_path / "hf")]) == 0
