"""Checkpoint averaging equals the mean of the weights computed by hand."""

from __future__ import annotations

import pytest
import torch

import attnkit
from attnkit.data.tokenizer import char_tokenizer
from attnkit.errors import CheckpointError
from attnkit.training.averaging import average_checkpoints, save_averaged


def tiny(seed: int, **kw) -> attnkit.Transformer:
    torch.manual_seed(seed)
    return attnkit.Transformer(attnkit.preset("transformer-tiny", **kw))


def test_average_is_the_mean_by_hand(tmp_path):
    models = [tiny(s) for s in range(3)]
    paths = [m.save_pretrained(tmp_path / f"step-{i}") for i, m in enumerate(models)]
    avg = average_checkpoints(paths)
    states = [m.state_dict() for m in models]
    assert "src_embed.embedding.weight" in avg and "lm_head.weight" not in avg  # the tied weight is stored once
    assert len(avg) > 20
    for name, value in avg.items():
        by_hand = (states[0][name] + states[1][name] + states[2][name]) / 3
        torch.testing.assert_close(value, by_hand, rtol=0, atol=1e-7)
        assert value.dtype == states[0][name].dtype


def test_single_checkpoint_is_returned_unchanged(tmp_path):
    m = tiny(0)
    avg = average_checkpoints([m.save_pretrained(tmp_path / "a")])
    for name, value in avg.items():
        assert torch.equal(value, m.state_dict()[name])


def test_bf16_weights_are_averaged_in_high_precision(tmp_path):
    models = [tiny(s).to(torch.bfloat16) for s in range(2)]
    paths = [m.save_pretrained(tmp_path / f"c{i}") for i, m in enumerate(models)]
    avg = average_checkpoints(paths)
    name = "encoder.layers.0.ffn.w1.weight"
    a, b = (m.state_dict()[name].double() for m in models)
    assert avg[name].dtype == torch.bfloat16
    torch.testing.assert_close(avg[name], ((a + b) / 2).to(torch.bfloat16), rtol=0, atol=0)


def test_save_averaged_writes_a_loadable_model_with_tokenizer(tmp_path):
    tok = char_tokenizer("0123456789")
    paths = [tiny(s).save_pretrained(tmp_path / f"s{s}", tokenizer=tok) for s in range(2)]
    save_averaged(paths, tmp_path / "model")
    loaded = attnkit.load(tmp_path / "model")
    assert (tmp_path / "model" / "tokenizer.json").is_file()
    expected = average_checkpoints(paths)
    for name, value in loaded.state_dict().items():
        if name in expected:
            assert torch.equal(value, expected[name])
    assert torch.equal(loaded.lm_head.weight, expected["src_embed.embedding.weight"])  # still tied


def test_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints to average"):
        average_checkpoints([])
    a = tiny(0).save_pretrained(tmp_path / "a")
    b = tiny(0, d_ff=64).save_pretrained(tmp_path / "b")
    with pytest.raises(CheckpointError, match=r"ffn\.w1\.(weight|bias) has shape \(64,.*\) but \(128,.*\) in "):
        average_checkpoints([a, b])
    c = tiny(0, n_encoder_layers=1).save_pretrained(tmp_path / "c")
    with pytest.raises(CheckpointError, match="hold different weights"):
        average_checkpoints([a, c])
    with pytest.raises(CheckpointError, match="does not exist"):
        average_checkpoints([a, tmp_path / "missing"])
