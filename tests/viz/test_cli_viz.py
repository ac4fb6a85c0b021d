"""attnkit viz attention: a self-contained page whose data is the model's attention; PNG heatmaps of the right size."""

from __future__ import annotations

import base64
import json
import re
import zlib

import numpy as np
import pytest
import torch

from attnkit.cli.main import main
from attnkit.inspect import attentions, rollout
from attnkit.loading import load
from attnkit.viz.heatmap import figure_size

plt = pytest.importorskip("matplotlib.pyplot")


def page_data(path) -> dict:
    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="attnkit-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1))


def layer(group: dict, n: int) -> np.ndarray:
    raw = np.frombuffer(zlib.decompress(base64.b64decode(group["layers"][n])), dtype=np.uint8)
    return raw.reshape(group["n_heads"], len(group["q_tokens"]), len(group["k_tokens"]))


def test_page_is_self_contained_and_holds_the_models_attention(model_dirs, tmp_path, capsys) -> None:
    out = tmp_path / "gpt.html"
    assert main(["viz", "attention", "--model", str(model_dirs["gpt"]), "--text", "the quick brown fox", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script src" not in text and "<link" not in text
    data = page_data(out)
    g, flow = data["groups"]
    assert g["name"] == "self" and g["n_layers"] == 2 and g["n_heads"] == 4
    assert flow["name"] == "rollout" and flow["n_layers"] == 2 and flow["n_heads"] == 1
    from attnkit.data.tokenizer import load_tokenizer

    enc = load_tokenizer(model_dirs["gpt"]).encode("the quick brown fox")
    assert g["q_tokens"] == enc.tokens
    ref = attentions(load(model_dirs["gpt"]), torch.tensor([enc.ids]))["self"]
    for n in range(2):
        stored = layer(g, n).astype(np.float64) / 255  # sqrt(p), to half a level
        np.testing.assert_allclose(stored, ref[n][0].double().sqrt().numpy(), atol=0.5 / 255 + 1e-9)
    top = rollout(ref)[0].double().sqrt().numpy()
    np.testing.assert_allclose(layer(flow, 1)[0].astype(np.float64) / 255, top, atol=0.5 / 255 + 1e-9)


def test_encoder_decoder_has_three_groups_and_png_heatmaps(model_dirs, tmp_path) -> None:
    out, png = tmp_path / "s2s.html", tmp_path / "png"
    args = ["viz", "attention", "--model", str(model_dirs["seq2seq"]), "--text", "the lazy dog", "--pair", "a quick fox",
            "--out", str(out), "--png", str(png)]
    assert main(args) == 0
    groups = page_data(out)["groups"]
    assert [g["name"] for g in groups] == ["encoder", "decoder", "cross", "rollout"]
    enc, dec, cross, flow = groups
    assert flow["q_tokens"] == enc["q_tokens"]
    assert cross["q_tokens"] == dec["q_tokens"] and cross["k_tokens"] == enc["q_tokens"]
    assert dec["q_tokens"][0] == "<s>"
    files = sorted(p.name for p in png.iterdir())
    assert files == [f"{g}_layer{n}.png" for g in ("cross", "decoder", "encoder", "rollout") for n in (0, 1)]
    for f in png.iterdir():
        h, w = plt.imread(f).shape[:2]
        assert (w, h) == ((300, 300) if f.name.startswith("rollout") else (1200, 300))
    assert figure_size(4) == (1200, 300) and figure_size(1) == (300, 300) and figure_size(12) == (1200, 900)


def test_bert_pair_and_words(model_dirs, tmp_path) -> None:
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    base = ["viz", "attention", "--model", str(model_dirs["bert"]), "--text", "unbelievable attention", "--pair", "the lazy dog"]
    assert main(base + ["--out", str(a)]) == 0
    assert main(base + ["--out", str(b), "--words"]) == 0
    pieces, words = page_data(a)["groups"][0], page_data(b)["groups"][0]
    assert page_data(b)["groups"][1]["q_tokens"] == words["q_tokens"]  # the rollout, merged too
    assert pieces["q_tokens"][0] == "[CLS]" and pieces["q_tokens"].count("[SEP]") == 2
    assert words["q_tokens"] == ["[CLS]", "unbelievable", "attention", "[SEP]", "the", "lazy", "dog", "[SEP]"]
    assert len(pieces["q_tokens"]) > len(words["q_tokens"])
    w = layer(words, 0).astype(np.float64) / 255
    np.testing.assert_allclose((w**2).sum(-1), 1.0, atol=0.05)  # merged rows still sum to one


def test_user_mistakes_are_one_line_errors(model_dirs, tmp_path, capsys) -> None:
    gpt = ["viz", "attention", "--model", str(model_dirs["gpt"])]
    assert main(gpt + ["--text", "a fox", "--pair", "b", "--out", str(tmp_path / "x.html")]) == 2
    assert "--pair" in capsys.readouterr().err
    assert main(gpt + ["--text", "  ", "--out", str(tmp_path / "x.html")]) == 2
    assert main(gpt + ["--text", "a fox", "--out", str(tmp_path)]) == 2
    assert "directory" in capsys.readouterr().err


def test_existing_outputs_are_kept_unless_overwrite(model_dirs, tmp_path, capsys) -> None:
    page, png = tmp_path / "a.html", tmp_path / "png"
    page.write_text("keep me")
    args = ["viz", "attention", "--model", str(model_dirs["gpt"]), "--text", "a fox", "--out", str(page)]
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert page.read_text() == "keep me"
    assert main(args + ["--overwrite", "--png", str(png)]) == 0 and page.read_text().startswith("<!DOCTYPE html>")
    (png / "self_layer0.png").write_bytes(b"old")
    assert main(args[:-1] + [str(tmp_path / "b.html"), "--png", str(png)]) == 2
    assert (png / "self_layer0.png").read_bytes() == b"old"
    figures = tmp_path / "figures"
    assert main(["viz", "positions", "--out", str(figures)]) == 0
    assert main(["viz", "positions", "--out", str(figures)]) == 2
    assert main(["viz", "positions", "--out", str(figures), "--overwrite"]) == 0
