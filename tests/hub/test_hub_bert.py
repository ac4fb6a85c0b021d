"""Hugging Face BERT / RoBERTa / ALBERT / ELECTRA import and export, checked against transformers itself.

Each model is built from the transformers config class with random weights (random
LayerNorm affines too, so a swapped norm shows), saved with ``save_pretrained``, loaded by
``attnkit.load`` and compared in fp32 on a batch with right padding.
"""

from __future__ import annotations

import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

import attnkit  # noqa: E402
from attnkit.errors import CheckpointError, ConfigError  # noqa: E402
from attnkit.hub import save_hf_bert  # noqa: E402
from attnkit.models import BertClassifier, BertMLM, BertModel, BertQA, BertTagger, ElectraDiscriminator  # noqa: E402

ATOL = 1e-5
V, T = 67, 13

# family -> {setting name: config kwargs}; non-default sizes and activations in each.
SETTINGS = {
    "bert": {
        "small": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37),
        "relu-types": dict(hidden_size=24, num_hidden_layers=3, num_attention_heads=3, intermediate_size=48,
                           hidden_act="relu", type_vocab_size=3, layer_norm_eps=1e-6),
        "gelu-new": dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=1, intermediate_size=20, hidden_act="gelu_new"),
    },
    "roberta": {
        "small": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                      type_vocab_size=1, pad_token_id=1, max_position_embeddings=T + 2),
        "quick-gelu": dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=30, hidden_act="quick_gelu",
                           type_vocab_size=1, pad_token_id=3, max_position_embeddings=40, layer_norm_eps=1e-5),
    },
    "albert": {
        "small": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37, embedding_size=16),
        "equal-e-relu": dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=2, intermediate_size=40, embedding_size=24,
                             hidden_act="relu"),
    },
    "electra": {
        "small": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, embedding_size=16),
        "no-projection": dict(hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=40, embedding_size=24,
                              hidden_act="gelu_new"),
    },
}
ARCH = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "electra": "Electra"}
CASES = [(f, s) for f in SETTINGS for s in SETTINGS[f]]


def hf_config(family: str, setting: str, **extra):
    cls = getattr(transformers, f"{ARCH[family]}Config")
    base = dict(vocab_size=V, max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return cls(**{**base, **SETTINGS[family][setting], **extra})


def hf_model(tmp_path, family: str, setting: str, head: str = "Model", seed: int = 0, **extra):
    torch.manual_seed(seed)
    cls = getattr(transformers, f"{ARCH[family]}{head}")
    model = cls(hf_config(family, setting, **extra)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    path = tmp_path / f"hf-{family}-{head}"
    model.save_pretrained(path)
    return model, str(path)


def batch(pad_id: int, type_vocab: int = 2, t: int = T):
    """Right-padded ids (row r has 3r pad tokens), its mask and segment ids."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (3, t), generator=g)
    ids[ids == pad_id] = (pad_id + 1) % V
    mask = torch.ones(3, t, dtype=torch.long)
    for row in range(1, 3):
        mask[row, t - 3 * row:] = 0
    ids[mask == 0] = pad_id
    segments = torch.zeros_like(ids)
    if type_vocab > 1:
        segments[:, t // 2:] = 1
    return ids, mask, segments


def run_both(hf, ours, family, ids, mask, segments):
    kw = dict(attention_mask=mask) if family == "roberta" else dict(attention_mask=mask, token_type_ids=segments)
    with torch.no_grad():
        ref = hf(ids, output_hidden_states=True, **kw)
        got = ours(ids, attention_mask=mask, segment_ids=None if family == "roberta" else segments, output_hidden_states=True)
    return ref, got


@pytest.mark.parametrize("family, setting", CASES)
def test_encoder_matches_transformers(tmp_path, family, setting):
    hf, path = hf_model(tmp_path, family, setting)
    ours = attnkit.load(path).eval()
    assert isinstance(ours, BertModel)
    ids, mask, seg = batch(hf.config.pad_token_id or 0, hf.config.type_vocab_size)
    ref, got = run_both(hf, ours, family, ids, mask, seg)
    real = mask.bool()
    assert len(got.hidden_states) == len(ref.hidden_states) == hf.config.num_hidden_layers + 1
    for a, b in zip(got.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a[real], b[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(got.last_hidden[real], ref.last_hidden_state[real], atol=ATOL, rtol=0)
    if family != "electra":
        torch.testing.assert_close(got.pooled, ref.pooler_output, atol=ATOL, rtol=0)
    # Export round trip: transformers reads it back, attnkit too.
    out = save_hf_bert(ours, tmp_path / "exported", family=family)
    back = type(hf).from_pretrained(out).eval()
    again = attnkit.load(out).eval()
    ref2, got2 = run_both(back, again, family, ids, mask, seg)
    torch.testing.assert_close(ref2.last_hidden_state[real], ref.last_hidden_state[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(got2.last_hidden[real], ref.last_hidden_state[real], atol=ATOL, rtol=0)


HEAD_CASES = [
    ("ForSequenceClassification", BertClassifier, dict(num_labels=3)),
    ("ForTokenClassification", BertTagger, dict(num_labels=5)),
    ("ForQuestionAnswering", BertQA, {}),
    ("ForMaskedLM", BertMLM, {}),
]


def _head_logits(hf_out, head: str) -> torch.Tensor:
    if head == "ForQuestionAnswering":
        return torch.stack([hf_out.start_logits, hf_out.end_logits], dim=-1)
    return hf_out.logits


@pytest.mark.parametrize("family", list(SETTINGS))
@pytest.mark.parametrize("head, cls, extra", HEAD_CASES, ids=[h for h, _, _ in HEAD_CASES])
def test_head_logits_match_transformers(tmp_path, family, head, cls, extra):
    if family == "electra" and head == "ForMaskedLM":
        pytest.skip("ELECTRA's masked LM is its generator, a different head")
    hf, path = hf_model(tmp_path, family, "small", head, **extra)
    ours = attnkit.load(path).eval()
    assert isinstance(ours, cls)
    ids, mask, seg = batch(hf.config.pad_token_id or 0, hf.config.type_vocab_size)
    ref, got = run_both(hf, ours, family, ids, mask, seg)
    real = mask.bool()
    want = _head_logits(ref, head)
    per_token = head != "ForSequenceClassification"
    torch.testing.assert_close(got.logits[real] if per_token else got.logits, want[real] if per_token else want, atol=ATOL, rtol=0)
    back = type(hf).from_pretrained(save_hf_bert(ours, tmp_path / "exported", family=family)).eval()
    ref2, _ = run_both(back, ours, family, ids, mask, seg)
    again = _head_logits(ref2, head)
    torch.testing.assert_close(again[real] if per_token else again, want[real] if per_token else want, atol=ATOL, rtol=0)
    if head == "ForSequenceClassification":
        assert back.config.num_labels == 3


def test_electra_discriminator_matches(tmp_path):
    hf, path = hf_model(tmp_path, "electra", "small", "ForPreTraining")
    ours = attnkit.load(path).eval()
    assert isinstance(ours, ElectraDiscriminator)
    ids, mask, seg = batch(0)
    ref, got = run_both(hf, ours, "electra", ids, mask, seg)
    real = mask.bool()
    torch.testing.assert_close(got.logits[real], ref.logits[real], atol=ATOL, rtol=0)
    back = transformers.ElectraForPreTraining.from_pretrained(save_hf_bert(ours, tmp_path / "x", family="electra")).eval()
    ref2, _ = run_both(back, ours, "electra", ids, mask, seg)
    torch.testing.assert_close(ref2.logits[real], ref.logits[real], atol=ATOL, rtol=0)


def test_albert_shares_one_layer(tmp_path):
    _, path = hf_model(tmp_path, "albert", "small")
    ours = attnkit.load(path)
    assert ours.layers[0] is ours.layers[2]
    assert ours.num_parameters() == sum(p.numel() for p in transformers.AlbertModel.from_pretrained(path).parameters())


def test_attnkit_model_exports_and_matches(tmp_path):
    torch.manual_seed(0)
    ours = BertModel(attnkit.bert_preset("bert-test", vocab_size=V, dropout=0.0)).eval()
    back = transformers.BertModel.from_pretrained(save_hf_bert(ours, tmp_path / "x")).eval()
    ids, mask, seg = batch(0)
    ref, got = run_both(back, ours, "bert", ids, mask, seg)
    real = mask.bool()
    torch.testing.assert_close(got.last_hidden[real], ref.last_hidden_state[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(got.pooled, ref.pooler_output, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("encoder.layer.1.intermediate.dense.bias"), "'layers.1.ffn.w1.bias' (from 'encoder.layer.1.intermediate.dense.bias')"),
        (lambda s: s.pop("encoder.layer.0.attention.self.key.weight"), "'encoder.layer.0.attention.self.key.weight' is missing"),
        (lambda s: s.__setitem__("encoder.layer.0.attention.self.rotary", torch.zeros(2)), "encoder.layer.0.attention.self.rotary"),
        (lambda s: s.__setitem__("encoder.layer.0.output.dense.weight", torch.zeros(32, 36)),
         "'encoder.layer.0.output.dense.weight' gives layers.0.ffn.w2.weight the shape (32, 36)"),
        (lambda s: s.__setitem__("encoder.layer.2.output.LayerNorm.weight", torch.zeros(32)), "maps to 'layers.2.res_ffn.norm.weight'"),
    ],
    ids=["missing", "missing-fused-part", "unknown", "shape", "extra-layer"],
)
def test_strict_import_names_the_key(tmp_path, edit, message, edit_weights):
    _, path = hf_model(tmp_path, "bert", "small")
    edit_weights(path, edit)
    with pytest.raises(CheckpointError, match=re.escape(message)):
        attnkit.load(path)


def test_unsupported_variants_are_named(tmp_path):
    _, path = hf_model(tmp_path, "bert", "small", position_embedding_type="rotary")  # relative_key loads (test_hub_bert_relative.py)
    with pytest.raises(CheckpointError, match="position_embedding_type"):
        attnkit.load(path)
    _, path = hf_model(tmp_path, "bert", "small", "ForNextSentencePrediction")
    with pytest.raises(CheckpointError, match="BertForNextSentencePrediction"):
        attnkit.load(path)
    with pytest.raises(ConfigError, match="share_layers"):
        save_hf_bert(BertModel(attnkit.bert_preset("albert-base-v2", n_layers=1, vocab_size=V)), tmp_path / "x", family="bert")


def test_attnkit_checkpoint_is_not_mistaken_for_hf(tmp_path):
    BertModel(attnkit.bert_preset("bert-test")).save_pretrained(tmp_path / "enc")  # model_type "bert", attnkit keys
    assert isinstance(attnkit.load(tmp_path / "enc"), BertModel)
    model = BertMLM(attnkit.bert_preset("bert-test"))
    model.save_pretrained(tmp_path / "ak")
    again = attnkit.load(tmp_path / "ak")
    assert isinstance(again, BertMLM)
    assert again.decoder.weight is again.bert.embed.tokens.weight


@pytest.mark.parametrize("family, setting", [("bert", "small"), ("roberta", "small"), ("albert", "small")])
def test_cli_convert_round_trip(tmp_path, capsys, family, setting):
    from attnkit.cli.main import main

    hf, path = hf_model(tmp_path, family, setting, "ForSequenceClassification", num_labels=3)
    assert main(["convert", "--to-attnkit", path, str(tmp_path / "ak")]) == 0
    assert isinstance(attnkit.load(tmp_path / "ak"), BertClassifier)
    assert main(["convert", "--to-hf", str(tmp_path / "ak"), str(tmp_path / "hf2")]) == 0  # family inferred
    assert f"Hugging Face {family}" in capsys.readouterr().out
    back = type(hf).from_pretrained(tmp_path / "hf2").eval()
    ids, mask, seg = batch(hf.config.pad_token_id or 0, hf.config.type_vocab_size)
    ref, _ = run_both(hf, attnkit.load(path).eval(), family, ids, mask, seg)
    again, _ = run_both(back, attnkit.load(path).eval(), family, ids, mask, seg)
    torch.testing.assert_close(again.logits, ref.logits, atol=ATOL, rtol=0)
    assert main(["convert", "--to-hf", "--family", "albert", str(tmp_path / "ak"), str(tmp_path / "x")]) == (0 if family == "albert" else 2)


@pytest.mark.parametrize("family", ["bert", "albert"])
def test_pretraining_checkpoint_loads_as_mlm(tmp_path, family):
    """BertForPreTraining / AlbertForPreTraining: the MLM head is kept, the NSP / SOP head dropped on purpose."""
    hf, path = hf_model(tmp_path, family, "small", "ForPreTraining")
    ours = attnkit.load(path).eval()
    assert isinstance(ours, BertMLM)
    ids, mask, seg = batch(0)
    ref, got = run_both(hf, ours, family, ids, mask, seg)
    real = mask.bool()
    torch.testing.assert_close(got.logits[real], ref.prediction_logits[real], atol=ATOL, rtol=0)
    torch.testing.assert_close(got.encoder.pooled, hf.base_model(ids, attention_mask=mask, token_type_ids=seg).pooler_output,
                               atol=ATOL, rtol=0)
