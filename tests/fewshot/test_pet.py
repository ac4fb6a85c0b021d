"""PET's pieces against independent references: cloze rows against transformers' BertTokenizer, verbaliser scores
against BertForMaskedLM's logits at the mask, the ensemble against a loop, and the LM-BFF sampling protocol."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import attnkit
from attnkit.data.glue import ClassificationData, read_classification_tsv
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.errors import ConfigError, DataError
from attnkit.training import pet

LABELS = ["negative", "positive"]


def test_verbalizer_scores_equal_bert_for_masked_lm_logits_at_the_mask(tiny_mlm):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertForMaskedLM.from_pretrained(tiny_mlm / "mlm").eval()
    ak = attnkit.load(tiny_mlm / "mlm").eval()
    tok = WordPieceTokenizer.from_file(tiny_mlm / "mlm")
    data = read_classification_tsv(tiny_mlm / "test.tsv")
    pattern = pet.Pattern("{a} it was [MASK] .")
    cloze = pet.encode_cloze(tok, data, pattern, LABELS, 64)
    # the reference rows: transformers' own tokenizer on the filled-in pattern
    ref_tok = transformers.BertTokenizer(str(tiny_mlm / "mlm" / "vocab.txt"))
    for n, text in enumerate(data.texts):
        assert cloze.ids[n] == ref_tok(f"{text} it was [MASK] .")["input_ids"]
        assert cloze.ids[n][cloze.mask_pos[n]] == ref_tok.mask_token_id
    words = pet.parse_verbalizer("negative=terrible,positive=great", LABELS)
    label_ids = pet.verbalizer_ids(tok, words)
    assert label_ids == ref_tok.convert_tokens_to_ids(["terrible", "great"])
    model = pet.PETModel(pet.mlm_of(ak), label_ids)
    _, scores = pet.cloze_scores(model, cloze, pad_id=tok.pad_id, batch_size=5)
    for n, ids in enumerate(cloze.ids):  # one row at a time, unpadded, through the reference model
        with torch.no_grad():
            logits = hf(torch.tensor([ids])).logits[0]  # (T, V)
        expected = logits[cloze.mask_pos[n], label_ids]
        assert torch.allclose(scores[n], expected, atol=1e-5), n
    assert not torch.allclose(scores[:, 0], scores[:, 1])


@pytest.mark.parametrize("method", ["none", "prompt", "ptuning", "prefix", "lora", "wrapped-decoder"])
def test_scores_at_the_mask_equal_the_full_vocabulary_logits_selected(tiny_mlm, method):
    """PETModel runs the head at the masks only; the reference computes
    every position's logit over the whole vocabulary and selects (float64, with a soft prompt or another adapter)."""
    from attnkit.peft import PEFTConfig, apply_peft

    tok = WordPieceTokenizer.from_file(tiny_mlm / "mlm")
    data = read_classification_tsv(tiny_mlm / "test.tsv")
    cloze = pet.encode_cloze(tok, data, pet.Pattern("{a} it was [MASK] ."), LABELS, 64)
    label_ids = pet.verbalizer_ids(tok, {"negative": "terrible", "positive": "great"})
    mlm = pet.mlm_of(attnkit.load(tiny_mlm / "mlm"))
    torch.manual_seed(0)
    if method == "wrapped-decoder":  # a decoder wrapped in another module
        mlm.decoder = torch.nn.Sequential(mlm.decoder)
    else:
        apply_peft(mlm, PEFTConfig(method=method, n_virtual=3))
    for name, p in mlm.named_parameters():  # LoRA starts as the identity; make it count
        if "lora_B" in name:
            with torch.no_grad():
                p.add_(0.1 * torch.randn_like(p))
    dtype, tol = torch.float64, 1e-10
    mlm = mlm.to(dtype).eval()
    model = pet.PETModel(mlm, label_ids)
    b = pet.collate_cloze(cloze, range(8), tok.pad_id)
    assert b.attention_mask.min() == 0  # padded rows among them
    scores = model(b.ids, b.attention_mask, b.mask_pos)  # (B, C)
    logits = mlm(b.ids, attention_mask=b.attention_mask).logits  # (B, T, V): every position, every token
    expected = logits[torch.arange(8), b.mask_pos][:, label_ids]  # (B, C)
    assert scores.shape == (8, 2) and scores.dtype == dtype
    assert torch.allclose(scores, expected, rtol=0, atol=tol)
    trainable = [p for p in mlm.parameters() if p.requires_grad]
    got = torch.autograd.grad(scores.square().sum(), trainable, allow_unused=True)
    ref = torch.autograd.grad(expected.square().sum(), trainable, allow_unused=True)
    for g, r in zip(got, ref):
        assert (g is None and r is None) or torch.allclose(g, r, rtol=0, atol=tol * 10)
    if method in ("prompt", "ptuning"):  # the prompt changes the scores: the reference would notice it left out
        plain = pet.mlm_of(attnkit.load(tiny_mlm / "mlm")).to(dtype).eval()
        assert not torch.allclose(scores, pet.PETModel(plain, label_ids)(b.ids, b.attention_mask, b.mask_pos), atol=1e-3)


def test_pair_patterns_and_truncation_keep_the_mask(tiny_mlm):
    tok = WordPieceTokenizer.from_file(tiny_mlm / "mlm")
    data = ClassificationData(texts=["good " * 30], pairs=["bad movie"], labels=["positive"])
    cloze = pet.encode_cloze(tok, data, pet.Pattern("{a} ? [MASK] , {b}"), LABELS, 16)
    row = cloze.ids[0]
    assert len(row) == 16 and cloze.truncated == 1
    assert row[cloze.mask_pos[0]] == tok.mask_id and row[-1] == tok.sep_id
    # the longest slot lost its end: [CLS] good x 9 ? [MASK] , bad movie [SEP]
    assert tok.decode(row[1:10]) == " ".join(["good"] * 9) and tok.decode(row[-3:-1]) == "bad movie"
    assert cloze.mask_pos[0] == 11
    with pytest.raises(ConfigError, match="single sentences"):
        pet.encode_cloze(tok, ClassificationData(texts=["a"], pairs=None, labels=None), pet.Pattern("{a} [MASK] {b}"), LABELS, 16)


@pytest.mark.parametrize("text", ["{a} it was .", "{a} [MASK] [MASK]", "it was [MASK]"])
def test_bad_patterns_are_refused(text):
    with pytest.raises(ConfigError):
        pet.Pattern(text)


def test_verbalizer_needs_one_token_per_label(tiny_mlm):
    tok = WordPieceTokenizer.from_file(tiny_mlm / "mlm")
    with pytest.raises(ConfigError, match="one token"):
        pet.verbalizer_ids(tok, {"negative": "awful", "positive": "great"})  # not in the vocabulary
    with pytest.raises(ConfigError, match="missing"):
        pet.parse_verbalizer("positive=great", LABELS)
    with pytest.raises(ConfigError, match="one word"):
        pet.parse_verbalizer("positive=great,negative=great", LABELS)


def test_ensemble_and_soft_labels_follow_the_formula():
    torch.manual_seed(0)
    scores = [torch.randn(5, 3) for _ in range(3)]
    w = [0.5, 0.0, 2.0]
    expected = torch.zeros(5, 3)
    for s, wi in zip(scores, w):
        expected += wi * s
    expected /= sum(w)
    assert torch.allclose(pet.ensemble_scores(scores, w), expected, atol=1e-6)
    assert torch.allclose(pet.ensemble_scores(scores), sum(scores) / 3, atol=1e-6)
    soft = pet.soft_labels(expected, 2.0)
    assert torch.allclose(soft, torch.exp(expected / 2) / torch.exp(expected / 2).sum(-1, keepdim=True), atol=1e-6)
    loss, n = pet.soft_cross_entropy(expected, soft)
    assert int(n) == 5
    assert torch.allclose(loss, -(soft * torch.log_softmax(expected, -1)).sum() / 5, atol=1e-6)
    with pytest.raises(ConfigError):
        pet.ensemble_scores(scores, [0.0, 0.0, 0.0])


def test_calibration_divides_out_the_label_words_prior_as_contextual_calibration_does():
    """Zhao et al. 2021: p(l | x) / p_prior(l), renormalised over the label words, with p_prior the mean over unlabelled rows of
    each word's full-vocabulary log-probability (the geometric mean), computed here from the whole vocabulary's logits."""
    torch.manual_seed(0)
    vocab, label_ids = 50, [7, 19]
    full = torch.randn(40, vocab)  # logits at the mask over the vocabulary
    full[:, 7] += 3.0  # a head that prefers word 7 whatever the input
    test, unlabeled = full[:10], full[10:]
    log_p = torch.log_softmax(test, -1)[:, label_ids]
    log_prior = torch.log_softmax(unlabeled, -1)[:, label_ids].mean(0)
    expected = torch.softmax(log_p - log_prior, -1)  # the calibrated distribution over the two labels
    got = pet.calibrated(test[:, label_ids], unlabeled[:, label_ids])
    assert torch.allclose(torch.softmax(got, -1), expected, atol=1e-5)
    assert (test[:, label_ids].argmax(-1) == 0).all() and set(got.argmax(-1).tolist()) == {0, 1}


def test_lmbff_sampling_k_per_class_disjoint_deterministic_and_seed_dependent():
    labels = ["a"] * 40 + ["b"] * 50 + ["c"] * 33
    k = 16
    draws = {}
    for seed in range(5):
        train, dev = pet.lmbff_sample(labels, k, seed)
        assert Counter(labels[i] for i in train) == {"a": k, "b": k, "c": k}
        assert Counter(labels[i] for i in dev) == {"a": k, "b": k, "c": k}
        assert not set(train) & set(dev) and len(set(train)) == len(train)
        assert pet.lmbff_sample(labels, k, seed) == (train, dev)  # the same seed, the same sets
        draws[seed] = frozenset(train)
    assert len(set(draws.values())) == 5  # every seed its own sample
    with pytest.raises(DataError, match="'c' has 33"):
        pet.lmbff_sample(labels, 17, 0)
