"""XLNet's fine-tuning heads against transformers' XLNetForSequenceClassification / XLNetForTokenClassification
with random weights, through the key maps both ways."""

from __future__ import annotations

import pytest
import torch

import attnkit
from attnkit.errors import CheckpointError
from attnkit.hub.xlnet import load_hf_xlnet, save_hf_xlnet, xlnet_from_hf
from attnkit.models.xlnet_heads import XLNetClassifier, XLNetTagger

transformers = pytest.importorskip("transformers")


def hf_config(**kw):
    return transformers.XLNetConfig(vocab_size=80, d_model=32, n_layer=2, n_head=4, d_inner=48, dropout=0.0, mem_len=None,
                                    summary_last_dropout=0.0, num_labels=3, **kw)


def inputs(left_pad: bool):
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(6, 80, (3, 10), generator=g)
    mask = torch.ones(3, 10, dtype=torch.long)
    if left_pad:  # XLNet's own layout: padding on the left, the summary token last
        mask[1, :4] = 0
        mask[2, :2] = 0
    seg = torch.tensor([[0] * 6 + [1] * 4] * 3)
    return ids, mask, seg


@pytest.mark.parametrize("summary,left_pad", [("first", False), ("last", False), ("last", True), ("mean", False)])
def test_classifier_logits_match(summary, left_pad):
    torch.manual_seed(0)
    hf = transformers.XLNetForSequenceClassification(hf_config(summary_type=summary)).eval()
    ours = xlnet_from_hf(hf).eval()
    assert isinstance(ours, XLNetClassifier) and ours.config.summary == summary
    ids, mask, seg = inputs(left_pad)
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, token_type_ids=seg).logits
        got = ours(ids, attention_mask=mask, segment_ids=seg).logits
    assert got.shape == (3, 3)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_first_summary_ignores_right_padding():
    """attnkit's data puts [CLS] first and pads on the right: a padded row scores as it does alone."""
    torch.manual_seed(1)
    ours = xlnet_from_hf(transformers.XLNetForSequenceClassification(hf_config(summary_type="first"))).eval()
    ids = torch.randint(6, 80, (1, 7))
    padded = torch.cat([ids, torch.full((1, 3), 5)], dim=1)
    mask = torch.tensor([[1] * 7 + [0] * 3])
    with torch.no_grad():
        torch.testing.assert_close(ours(padded, attention_mask=mask).logits, ours(ids).logits, atol=1e-5, rtol=1e-5)


def test_tagger_logits_match():
    torch.manual_seed(2)
    hf = transformers.XLNetForTokenClassification(hf_config()).eval()
    ours = xlnet_from_hf(hf).eval()
    assert isinstance(ours, XLNetTagger)
    ids, mask, seg = inputs(left_pad=False)
    mask[0, 7:] = 0
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, token_type_ids=seg).logits
        got = ours(ids, attention_mask=mask, segment_ids=seg).logits
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("cls", ["XLNetForSequenceClassification", "XLNetForTokenClassification", "XLNetLMHeadModel"])
def test_directories_round_trip_through_transformers(tmp_path, cls):
    torch.manual_seed(3)
    hf = getattr(transformers, cls)(hf_config(summary_type="first", id2label={0: "neg", 1: "neu", 2: "pos"})).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = attnkit.load(tmp_path / "hf").eval()  # attnkit.load recognises the directory
    if cls != "XLNetLMHeadModel":
        assert ours.config.labels == ("neg", "neu", "pos")
    save_hf_xlnet(ours, tmp_path / "back")
    back = getattr(transformers, cls).from_pretrained(tmp_path / "back").eval()
    ids, mask, seg = inputs(left_pad=False)
    with torch.no_grad():
        ref = back(ids, attention_mask=mask, token_type_ids=seg).logits
        got = ours(ids, attention_mask=mask, segment_ids=seg).logits
        orig = hf(ids, attention_mask=mask, token_type_ids=seg).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(orig, ref, atol=1e-5, rtol=1e-5)
    if cls != "XLNetLMHeadModel":
        assert back.config.id2label == {0: "neg", 1: "neu", 2: "pos"}


def test_unsupported_variants_are_named(tmp_path):
    torch.manual_seed(4)
    hf = transformers.XLNetForSequenceClassification(hf_config(summary_type="cls_index"))
    hf.save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="summary_type='cls_index'"):
        load_hf_xlnet(tmp_path / "hf")
    uni = transformers.XLNetLMHeadModel(transformers.XLNetConfig(vocab_size=80, d_model=32, n_layer=1, n_head=4, d_inner=48,
                                                                   attn_type="uni"))
    with pytest.raises(CheckpointError, match="attn_type='uni'"):
        xlnet_from_hf(uni)


def test_a_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(5)
    transformers.XLNetForTokenClassification(hf_config()).save_pretrained(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    state = load_file(weights)
    del state["transformer.layer.1.rel_attn.r_s_bias"]
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="layers.1.attn.segment_bias"):
        load_hf_xlnet(tmp_path / "hf")
