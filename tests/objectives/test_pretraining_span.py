"""The pretraining and span losses against per-position log-softmax sums written out by hand."""

from __future__ import annotations

import math

import torch

from attnkit.objectives import pretraining_loss, span_loss
from attnkit.objectives.mlm import IGNORE


def nll(logits: torch.Tensor, target: int) -> float:
    row = logits.double()
    return -(row[target] - math.log(row.exp().sum()))


def test_pretraining_loss_is_mean_over_chosen_tokens_plus_mean_pair_loss():
    g = torch.Generator().manual_seed(0)
    mlm_logits, pair_logits = torch.randn(3, 5, 11, generator=g), torch.randn(3, 2, generator=g)
    labels = torch.full((3, 5), IGNORE)
    labels[0, 1], labels[1, 4], labels[2, 0], labels[2, 3] = 7, 2, 10, 0
    pair_labels = torch.tensor([1, 0, 1])
    chosen = [(b, t) for b in range(3) for t in range(5) if labels[b, t] != IGNORE]
    mlm_ref = sum(nll(mlm_logits[b, t], int(labels[b, t])) for b, t in chosen) / len(chosen)
    pair_ref = sum(nll(pair_logits[b], int(pair_labels[b])) for b in range(3)) / 3
    total, mlm, n = pretraining_loss(mlm_logits, labels, pair_logits, pair_labels)
    assert int(n) == 4
    assert math.isclose(float(mlm), mlm_ref, rel_tol=1e-5) and math.isclose(float(total), mlm_ref + pair_ref, rel_tol=1e-5)
    total, mlm, _ = pretraining_loss(mlm_logits, labels, None, None)  # no pair head: MLM alone
    assert math.isclose(float(total), mlm_ref, rel_tol=1e-5)
    total, mlm, n = pretraining_loss(mlm_logits, torch.full((3, 5), IGNORE), None, None)  # nothing chosen: 0, not NaN
    assert int(n) == 0 and float(total) == 0.0


def test_span_loss_averages_start_and_end_cross_entropies():
    g = torch.Generator().manual_seed(1)
    start_logits, end_logits = torch.randn(4, 9, generator=g).half(), torch.randn(4, 9, generator=g).half()
    start, end = torch.tensor([0, 3, 8, 2]), torch.tensor([0, 5, 8, 2])
    ref = sum(nll(start_logits[b].float(), int(start[b])) + nll(end_logits[b].float(), int(end[b])) for b in range(4)) / 8
    loss = span_loss(start_logits, end_logits, start, end)
    assert loss.dtype == torch.float32 and math.isclose(float(loss), ref, rel_tol=1e-5)
