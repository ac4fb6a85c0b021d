"""ROC AUC (the ELECTRA discriminator's held-out score) against scikit-learn's roc_auc_score."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.metrics import roc_auc


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_scikit_learn_with_and_without_ties(seed):
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(seed)
    labels = torch.rand(500, generator=g) < 0.2
    scores = torch.randn(500, generator=g) + labels.float()
    assert roc_auc(scores, labels) == pytest.approx(sklearn.roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    coarse = (scores * 2).round() / 2  # many ties, as bfloat16 logits have
    assert roc_auc(coarse, labels) == pytest.approx(sklearn.roc_auc_score(labels.numpy(), coarse.numpy()), abs=1e-12)


def test_auc_edges():
    y = torch.tensor([False, False, True, True])
    assert roc_auc(torch.tensor([0.1, 0.2, 0.3, 0.4]), y) == 1.0
    assert roc_auc(torch.tensor([0.4, 0.3, 0.2, 0.1]), y) == 0.0
    assert roc_auc(torch.zeros(4), y) == 0.5  # every pair tied
    assert math.isnan(roc_auc(torch.zeros(3), torch.zeros(3, dtype=torch.bool)))
