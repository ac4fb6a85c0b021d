"""The BERT-family encoder and its heads: sizes, padding, relatives' options, save/load, bad configs."""

from __future__ import annotations

import pytest
import torch

import attnkit
from attnkit.errors import CheckpointError, ConfigError, DataError
from attnkit.models import (
    BertClassifier,
    BertConfig,
    BertMLM,
    BertModel,
    BertQA,
    BertTagger,
    BertTaskConfig,
    ElectraDiscriminator,
    bert_preset,
)
from attnkit.summary import parameter_breakdown

TINY = bert_preset("bert-test", dropout=0.0)


@pytest.mark.parametrize(
    "name, hf_class, hf_kwargs",
    [
        ("bert-base", "BertConfig", {}),
        ("bert-large", "BertConfig", dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
        ("bert-tiny", "BertConfig", dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)),
        ("bert-medium", "BertConfig", dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=2048)),
        ("roberta-base", "RobertaConfig", dict(vocab_size=50265, max_position_embeddings=514, type_vocab_size=1)),
        ("albert-base-v2", "AlbertConfig",
         dict(vocab_size=30000, embedding_size=128, hidden_size=768, num_attention_heads=12, intermediate_size=3072)),
        ("electra-small-discriminator", "ElectraConfig",
         dict(embedding_size=128, hidden_size=256, num_attention_heads=4, intermediate_size=1024)),
    ],
)
def test_preset_sizes_match_transformers(name, hf_class, hf_kwargs):
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        ours = BertModel(bert_preset(name))
        ref = getattr(transformers, hf_class.replace("Config", "Model"))(getattr(transformers, hf_class)(**hf_kwargs))
    assert ours.num_parameters() == sum(p.numel() for p in ref.parameters())


def test_bert_base_is_110m_and_breakdown_adds_up():
    with torch.device("meta"):
        model = BertModel(bert_preset("bert-base"))
    b = parameter_breakdown(model)
    assert b["all"]["total"] == model.num_parameters() == 109_482_240  # "110M" (Devlin et al. 2019, section 3)
    # 12 H^2 per layer in attention + FFN matrices (summary.py's formula).
    assert b["attention"]["matrices"] + b["feed_forward"]["matrices"] == 12 * 12 * 768**2


def test_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    ids = torch.randint(5, TINY.vocab_size, (1, 9))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 9), torch.zeros(1, 4)], dim=1)
    with torch.no_grad():
        alone = model(ids)
        batch = model(padded, attention_mask=mask)
    torch.testing.assert_close(batch.last_hidden[:, :9], alone.last_hidden, atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.pooled, alone.pooled, atol=1e-6, rtol=0)


def test_hidden_states_and_segments():
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    ids = torch.randint(5, TINY.vocab_size, (2, 7))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        other = model(ids, segment_ids=torch.ones_like(ids))
    assert len(out.hidden_states) == TINY.n_layers + 1
    assert torch.equal(out.hidden_states[-1], out.last_hidden)
    assert not torch.allclose(other.last_hidden, out.last_hidden)  # segment embeddings are used


def test_default_segments_and_positions_equal_explicit_ones():
    """No segment or position ids (broadcast table rows) gives the outputs and gradients of explicit zeros and 0..T-1."""
    torch.manual_seed(0)
    model = BertModel(TINY).eval()
    ids = torch.randint(5, TINY.vocab_size, (3, 7))
    explicit = dict(segment_ids=torch.zeros_like(ids), positions=torch.arange(7).expand(3, 7))
    grads = []
    for kw in ({}, explicit):
        model.zero_grad()
        out = model(ids, **kw)
        out.last_hidden.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.embed.named_parameters()})
        if kw:
            torch.testing.assert_close(out.last_hidden, first, atol=1e-6, rtol=0)
        first = out.last_hidden.detach()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-5, msg=name)


def test_roberta_positions_start_after_padding():
    model = BertModel(bert_preset("bert-test", positions="after_pad", pad_id=1, type_vocab_size=1, max_positions=12))
    ids = torch.tensor([[0, 5, 6, 2, 1, 1]])
    assert model.embed.position_ids(ids).tolist() == [[2, 3, 4, 5, 1, 1]]
    assert model.config.max_len == 10
    model(torch.full((1, 10), 7))
    with pytest.raises(DataError, match="longer than the model's 10 positions"):
        model(torch.full((1, 11), 7))


def test_albert_sharing_and_factorised_embeddings():
    cfg = bert_preset("bert-test", d_embed=16, share_layers=True, n_layers=4)
    model = BertModel(cfg)
    assert all(layer is model.layers[0] for layer in model.layers)
    unshared = BertModel(bert_preset("bert-test", d_embed=16, n_layers=1))
    assert model.num_parameters() == unshared.num_parameters()
    assert model.embed.tokens.weight.shape == (cfg.vocab_size, 16)
    assert model(torch.randint(0, 99, (2, 5))).last_hidden.shape == (2, 5, 32)


HEADS = [
    (BertMLM, TINY, lambda b, t: (b, t, TINY.vocab_size)),
    (BertClassifier, BertTaskConfig(encoder=TINY, num_labels=3), lambda b, t: (b, 3)),
    (BertClassifier, BertTaskConfig(encoder=TINY.replace(pooler=False), num_labels=3, classifier="cls_tanh"), lambda b, t: (b, 3)),
    (BertTagger, BertTaskConfig(encoder=TINY, num_labels=5, labels=("O", "B-x", "I-x", "B-y", "I-y")), lambda b, t: (b, t, 5)),
    (BertQA, BertTaskConfig(encoder=TINY), lambda b, t: (b, t, 2)),
    (ElectraDiscriminator, TINY.replace(pooler=False), lambda b, t: (b, t)),
]


@pytest.mark.parametrize("cls, config, shape", HEADS, ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(HEADS)])
def test_heads_shapes_and_save_load(tmp_path, cls, config, shape):
    torch.manual_seed(0)
    model = cls(config).eval()
    ids = torch.randint(5, TINY.vocab_size, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    assert logits.shape == shape(2, 6)
    again = attnkit.load(model.save_pretrained(tmp_path / "m")).eval()
    assert type(again) is cls and again.config == config
    with torch.no_grad():
        assert torch.equal(again(ids, attention_mask=mask).logits, logits)


def test_mlm_decoder_is_tied():
    model = BertMLM(TINY)
    assert model.decoder.weight is model.bert.embed.tokens.weight


def test_qa_output_names():
    model = BertQA(BertTaskConfig(encoder=TINY)).eval()
    out = model(torch.randint(0, 99, (2, 6)))
    assert torch.equal(out.start_logits, out.logits[..., 0]) and out.end_logits.shape == (2, 6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: BertConfig(d_model=30, n_heads=4), "n_heads=4"),
        (lambda: BertConfig(pad_id=30522), "pad_id=30522"),
        (lambda: BertConfig(positions="relative"), "positions='relative'"),
        (lambda: BertConfig.from_dict({"hidden_size": 3}), "unknown config key 'hidden_size'"),
        (lambda: BertTaskConfig(num_labels=2, labels=("a",)), "labels"),
        (lambda: BertQA(BertTaskConfig(encoder=TINY, num_labels=3)), "num_labels=3"),
        (lambda: BertClassifier(BertTaskConfig(encoder=TINY.replace(pooler=False))), "classifier='pooler'"),
        (lambda: bert_preset("bert-huge"), "unknown BERT preset"),
    ],
)
def test_bad_configs_are_named(make, message):
    with pytest.raises((ConfigError, ValueError), match=message.replace("(", r"\(").replace("[", r"\[")):
        make()


def test_corrupt_checkpoint_is_one_line(tmp_path):
    BertModel(TINY).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="corrupt"):
        attnkit.load(tmp_path / "m")


def test_mean_classifier_is_a_linear_layer_on_the_masked_mean_state():
    """``classifier="mean"``: logits = W mean_{t: mask=1} h_t + b, written out here with the
    encoder's own states; padding rows of a shorter sequence do not change its logits."""
    torch.manual_seed(0)
    model = BertClassifier(BertTaskConfig(encoder=TINY, num_labels=3, classifier="mean")).eval()
    assert model.dense is None
    ids = torch.randint(5, TINY.vocab_size, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    ids[1, 6:] = TINY.pad_id
    with torch.no_grad():
        got = model(ids, attention_mask=mask).logits  # (2, 3)
        hidden = model.bert(ids, attention_mask=mask).last_hidden  # (2, 9, H)
        pooled = torch.stack([hidden[0].mean(0), hidden[1, :6].mean(0)])  # (2, H)
        want = pooled @ model.out.weight.T + model.out.bias
        alone = model(ids[1:, :6], attention_mask=mask[1:, :6]).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1:], alone, atol=1e-5, rtol=1e-5)
