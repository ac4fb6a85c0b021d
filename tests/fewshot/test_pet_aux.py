"""PET's auxiliary masked-LM loss (Schick & Schütze 2021, section 3.1) against transformers' BertForMaskedLM."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import attnkit
from attnkit.cli.main import main
from attnkit.data.glue import read_classification_tsv
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.errors import ConfigError
from attnkit.objectives.mlm import IGNORE, MaskingConfig
from attnkit.training import pet
from attnkit.training.pet_aux import AuxiliaryLM

LABELS = ["negative", "positive"]
PATTERN = pet.Pattern("{a} it was [MASK] .")
FAST = ["--no-progress", "--set", "train.device=cpu", "--set", "train.steps=2", "--set", "train.eval.every=1",
        "--set", "train.batch_size=4", "--set", "train.optim.lr=1e-3", "--max-len", "24", "--shots", "4", "--seeds", "1",
        "--verbalizer", "negative=terrible,positive=great"]


def setup(tiny_mlm, alpha=1e-4):
    tok = WordPieceTokenizer.from_file(tiny_mlm / "mlm")
    data = read_classification_tsv(tiny_mlm / "train.tsv")
    cloze = pet.encode_cloze(tok, data, PATTERN, LABELS, 32)
    unlabelled = pet.encode_cloze(tok, pet.subset(data, range(len(data)), keep_labels=False), PATTERN, LABELS, 32)
    aux = AuxiliaryLM(unlabelled.ids, mask_id=tok.mask_id, random_ids=tok.random_ids(), special_ids=tok.special_ids,
                      alpha=alpha, masking=MaskingConfig(select_prob=0.3))
    task = pet.ClozeTask(cloze.subset(range(8)), None, batch_size=4, pad_id=tok.pad_id, aux=aux)
    return tok, task, aux


def full_labels(batch) -> torch.Tensor:
    labels = torch.full_like(batch.lm_ids, IGNORE)
    for r in range(labels.shape[0]):
        for p, t in zip(batch.lm_positions[r].tolist(), batch.lm_targets[r].tolist()):
            if t != IGNORE:
                labels[r, p] = t
    return labels


def test_unlabelled_rows_are_masked_like_pretraining_and_never_lose_the_patterns_mask(tiny_mlm):
    tok, task, aux = setup(tiny_mlm)
    chosen = real = 0
    for k, b in enumerate(task.batches(0, 0)):
        assert b.lm_ids.shape[0] == aux.ratio * b.ids.shape[0]
        labels = full_labels(b)
        picked = labels != IGNORE
        originals = torch.where(picked, labels, b.lm_ids)
        assert not torch.isin(originals[picked], torch.tensor(tok.special_ids)).any()  # never [CLS], [SEP], [PAD], [MASK]
        assert ((originals == tok.mask_id).sum(1) == 1).all()  # each row keeps the pattern's one [MASK]
        chosen += int(picked.sum())
        real += int((b.lm_mask.bool() & ~torch.isin(originals, torch.tensor(tok.special_ids))).sum())
    assert 0.15 < chosen / real < 0.45  # select_prob 0.3
    again = [b.lm_ids for b in task.batches(0, 0)]
    assert all(torch.equal(a, b.lm_ids) for a, b in zip(again, task.batches(0, 0)))  # fixed by (seed, epoch, batch)
    assert not torch.equal(again[0], next(iter(task.batches(1, 0))).lm_ids)


@pytest.mark.parametrize("alpha", [1e-4, 0.5])
def test_loss_is_the_papers_weighted_sum_with_bert_for_masked_lm_as_reference(tiny_mlm, alpha):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertForMaskedLM.from_pretrained(tiny_mlm / "mlm").eval()
    tok, task, _ = setup(tiny_mlm, alpha)
    label_ids = pet.verbalizer_ids(tok, pet.parse_verbalizer("negative=terrible,positive=great", LABELS))
    model = pet.PETModel(pet.mlm_of(attnkit.load(tiny_mlm / "mlm")), label_ids).eval()
    batch = next(iter(task.batches(0, 3)))
    loss, n = task.loss(model, batch)
    with torch.no_grad():
        logits = hf(batch.ids, attention_mask=batch.attention_mask).logits  # (B, T, V)
        scores = logits[torch.arange(len(batch.mask_pos)), batch.mask_pos][:, label_ids]
        ce = F.cross_entropy(scores, batch.targets)
        lm = hf(batch.lm_ids, attention_mask=batch.lm_mask, labels=full_labels(batch)).loss
    assert int(n) == batch.ids.shape[0]
    torch.testing.assert_close(loss, (1 - alpha) * ce + alpha * lm, atol=1e-5, rtol=1e-5)


def test_without_the_auxiliary_lm_the_batches_and_loss_are_plain_pet(tiny_mlm):
    tok, task, _ = setup(tiny_mlm)
    plain = pet.ClozeTask(task.train, None, batch_size=4, pad_id=tok.pad_id)
    model = pet.PETModel(pet.mlm_of(attnkit.load(tiny_mlm / "mlm")), [5, 6]).eval()
    for a, b in zip(plain.batches(0, 0), task.batches(0, 0)):
        assert a.lm_ids is None and torch.equal(a.ids, b.ids)
        ce, _ = plain.loss(model, a)
        assert ce.item() == pytest.approx(F.cross_entropy(model(a.ids, a.attention_mask, a.mask_pos), a.targets).item(), abs=1e-6)


def test_bad_settings_are_refused(tiny_mlm):
    with pytest.raises(ConfigError, match="alpha"):
        AuxiliaryLM([[1, 2]], mask_id=4, random_ids=torch.arange(5, 9), special_ids=[0], alpha=0.0)
    with pytest.raises(ConfigError, match="ratio"):
        AuxiliaryLM([[1, 2]], mask_id=4, random_ids=torch.arange(5, 9), special_ids=[0], ratio=0)


def test_the_cli_trains_pet_with_the_auxiliary_lm(tiny_mlm, tmp_path, capsys):
    out = tmp_path / "pet-lm"
    code = main([str(a) for a in ("finetune", "fewshot", "--model", tiny_mlm / "mlm", "--train", tiny_mlm / "train.tsv",
                                  "--test", tiny_mlm / "test.tsv", "--set", "data.lm_alpha=1e-4", "--set", "data.distill=false",
                                  "--out", out, *FAST)])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads((out / "run_config.json").read_text())["data"]["lm_alpha"] == 1e-4
    code = main([str(a) for a in ("finetune", "fewshot", "--model", tiny_mlm / "mlm", "--train", tiny_mlm / "train.tsv",
                                  "--test", tiny_mlm / "test.tsv", "--set", "data.lm_alpha=1.5", "--out", tmp_path / "bad", *FAST)])
    _, err = capsys.readouterr()
    assert code == 2 and "lm_alpha" in err and len(err.strip().splitlines()) == 1
