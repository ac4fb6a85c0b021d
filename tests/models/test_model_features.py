"""Feature-based use of a frozen encoder (BERT section 5.3, ELMo eq. 1): features against Hugging Face's hidden states,
the weighted sum against its formula, no gradient into the encoder, and ``finetune classify|ner --features`` end to end."""

from __future__ import annotations

import json

import pytest
import torch

import attnkit
from attnkit.cli.main import main
from attnkit.models.features import FeatureModel, feature_model

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory):
    """A random 4-layer Hugging Face BertModel directory with a vocab.txt, and the attnkit model loaded from it."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("features")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "paris", "is", "nice", *(f"w{i}" for i in range(20))]
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                  intermediate_size=24, max_position_embeddings=32, pad_token_id=0)
    torch.manual_seed(0)
    transformers.BertModel(cfg).save_pretrained(root / "bert")
    (root / "bert" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return root, transformers.BertModel.from_pretrained(root / "bert").eval(), attnkit.load(root / "bert")


def test_last4_and_last_are_hugging_faces_hidden_states(four_layers):
    _, hf, source = four_layers
    ids = torch.tensor([[2, 5, 7, 12, 3, 0], [2, 6, 8, 9, 10, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        states = hf(ids, attention_mask=mask, output_hidden_states=True).hidden_states  # embeddings + 4 layers
    for kind, expected in (("last4", torch.cat(states[-4:], -1)), ("last", states[-1])):
        model = feature_model(source, "ner", LABELS, kind).eval()
        got = model.features(ids, mask)
        assert got.shape == expected.shape
        assert torch.allclose(got[mask.bool()], expected[mask.bool()], atol=1e-5)


def test_weighted_sum_is_gamma_times_softmax_weighted_layers(four_layers):
    _, hf, source = four_layers
    model = feature_model(source, "classify", LABELS, "weighted").eval()
    with torch.no_grad():
        model.mix.w.copy_(torch.tensor([0.3, -1.0, 2.0, 0.5, -0.2]))
        model.mix.gamma.fill_(1.7)
    ids = torch.tensor([[2, 5, 7, 12, 3]])
    with torch.no_grad():
        states = hf(ids, output_hidden_states=True).hidden_states
    w = torch.tensor([0.3, -1.0, 2.0, 0.5, -0.2])
    s = [float(torch.exp(x) / torch.exp(w).sum()) for x in w]
    expected = 1.7 * sum(sj * h for sj, h in zip(s, states))
    assert torch.allclose(model.features(ids), expected, atol=1e-5)


def test_the_encoder_gets_no_gradient_and_no_dropout(four_layers):
    _, _, source = four_layers
    model = feature_model(source, "ner", LABELS, "weighted", lstm_hidden=8)
    model.train()
    assert not model.bert.training and model.lstm.training
    ids = torch.tensor([[2, 5, 7, 12, 3], [2, 6, 8, 3, 0]])
    mask = (ids != 0).long()
    out = model(ids, attention_mask=mask).logits  # (B, T, C)
    assert out.shape == (2, 5, 2)
    out.sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in model.bert.parameters())
    for p in (model.mix.w, model.mix.gamma, model.out.weight, *model.lstm.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert torch.equal(model.features(ids, mask), model.features(ids, mask))  # training mode, yet no dropout in the encoder


def test_finetune_with_features_end_to_end(four_layers, tmp_path, capsys):
    root, _, source = four_layers
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"w{i} {'good' if i % 2 else 'bad'} film\t{LABELS[i % 2]}\n"
                                                                      for i in range(16)))
    conll = "".join(f"paris\tB-LOC\nis\tO\n{'nice' if i % 2 else 'good'}\tO\n\n" for i in range(8))
    (tmp_path / "train.conll").write_text(conll)
    fast = ["--no-progress", "--set", "train.device=cpu", "--set", "train.steps=3", "--set", "train.batch_size=8",
            "--set", "train.optim.lr=1e-2", "--set", "train.log_every=1"]
    for task, kind, train in (("classify", "weighted", "train.tsv"), ("ner", "last4", "train.conll")):
        out = tmp_path / task
        code = main([str(a) for a in ("finetune", task, "--model", root / "bert", "--train", tmp_path / train, "--dev", tmp_path / train,
                                      "--test", tmp_path / train, "--features", kind, "--out", out, *fast)])
        assert code == 0, capsys.readouterr().err
        saved = attnkit.load(out / "model")
        assert isinstance(saved, FeatureModel) and saved.config.features == kind and saved.config.task == task
        for k, v in source.state_dict().items():  # the encoder left as it was
            assert torch.equal(saved.bert.state_dict()[k], v), k
        final = json.loads((out / "eval.json").read_text())
        assert ("test_accuracy" if task == "classify" else "test_f1") in final
        capsys.readouterr()
        (tmp_path / "in.txt").write_text("w3 good film\n" if task == "classify" else "paris is nice\n")
        assert main(["predict", "--model", str(out / "model"), str(tmp_path / "in.txt"), "--device", "cpu"]) == 0
        printed = capsys.readouterr().out.split()
        if task == "ner":  # word<TAB>tag lines
            assert printed[0::2] == ["paris", "is", "nice"]
            printed = printed[1::2]
        assert printed and set(printed) <= (set(LABELS) if task == "classify" else {"B-LOC", "O"})
