"""The one dev-set loop: its count-weighted mean equals one cross-entropy over every target at once."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attnkit.objectives.classification import classification_loss
from attnkit.training.dev import dev_pass


def test_weighted_mean_equals_the_loss_over_all_targets_and_outputs_keep_order():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(40, 5, generator=g), torch.randint(0, 5, (40,), generator=g)
    targets[::7] = -100  # uncounted targets change the batches' weights
    cuts = [(0, 3), (3, 20), (20, 21), (21, 40)]

    def step(cut):
        a, b = cut
        loss, n = classification_loss(logits[a:b], targets[a:b])
        return loss, n, (a, b)

    result = dev_pass(step, cuts)
    whole = F.cross_entropy(logits, targets, ignore_index=-100)
    assert result.count == int((targets != -100).sum())
    assert math.isclose(result.loss, float(whole), rel_tol=1e-6)
    assert result.outputs == cuts


def test_python_int_counts_no_grad_and_empty_input():
    w = torch.ones((), requires_grad=True)
    seen = []

    def step(x):
        seen.append(torch.is_grad_enabled())
        return (w * x).mean(), 2

    assert dev_pass(step, [torch.tensor([1.0, 3.0]), torch.tensor([5.0, 7.0])]).loss == 4.0
    assert seen == [False, False]
    empty = dev_pass(step, [])
    assert (empty.loss, empty.count, empty.outputs) == (0.0, 0, [])
