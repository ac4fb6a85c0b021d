"""Label-smoothed cross entropy against torch.nn.CrossEntropyLoss(label_smoothing=eps)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnkit.objectives import label_smoothed_cross_entropy, seq2seq_loss


def _torch_reference(logits: torch.Tensor, target: torch.Tensor, eps: float, ignore_index: int, reduction: str):
    """nn.CrossEntropyLoss wants classes in dim 1: move V from last to second place."""
    ce = torch.nn.CrossEntropyLoss(label_smoothing=eps, ignore_index=ignore_index, reduction=reduction)
    if logits.dim() == 1:
        return ce(logits, target)
    return ce(logits.movedim(-1, 1), target)


def _random_case(shape: tuple[int, ...], vocab: int, ignore_index: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, vocab, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, vocab, shape, generator=g)
    drop = torch.rand(shape, generator=g) < 0.3
    target = target.masked_fill(drop, ignore_index)
    target.view(-1)[0] = 0  # at least one kept token, so torch's mean is defined
    return logits, target


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple),
    vocab=st.integers(2, 17),
    eps=st.sampled_from([0.0, 0.1, 0.3]),
    ignore_index=st.sampled_from([-100, 1]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    seed=st.integers(0, 2**16),
)
def test_matches_torch_loss_and_gradient(shape, vocab, eps, ignore_index, reduction, seed) -> None:
    logits, target = _random_case(shape, vocab, ignore_index, seed)
    ours_in = logits.clone().requires_grad_(True)
    ref_in = logits.clone().requires_grad_(True)
    ours = label_smoothed_cross_entropy(ours_in, target, epsilon=eps, ignore_index=ignore_index, reduction=reduction)
    ref = _torch_reference(ref_in, target, eps, ignore_index, reduction)
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=1e-5)
    # a non-uniform upstream gradient also checks the "none" reduction elementwise
    weight = torch.rand(ref.shape, generator=torch.Generator().manual_seed(seed + 1))
    (ours * weight).sum().backward()
    (ref * weight.double()).sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-4, atol=1e-6)


def test_smoothed_target_distribution_by_hand() -> None:
    # Independent of torch: q = (1 - eps) one_hot + eps / V, loss = -sum q log softmax.
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5]], dtype=torch.float64)
    target = torch.tensor([2])
    eps, v = 0.1, 4
    log_p = logits[0] - torch.logsumexp(logits[0], 0)
    q = torch.full((v,), eps / v, dtype=torch.float64)
    q[2] += 1 - eps
    expected = -(q * log_p).sum()
    got = label_smoothed_cross_entropy(logits, target, epsilon=eps)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_bf16_logits_are_computed_in_float32() -> None:
    logits, target = _random_case((3, 7), 50, -100, seed=0)
    logits_bf16 = logits.to(torch.bfloat16).requires_grad_(True)
    ours = label_smoothed_cross_entropy(logits_bf16, target, epsilon=0.1)
    ref = _torch_reference(logits_bf16.detach().double(), target, 0.1, -100, "mean")
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref.float(), rtol=1e-5, atol=1e-5)
    ours.backward()
    assert logits_bf16.grad is not None and logits_bf16.grad.dtype == torch.bfloat16


def test_all_ignored_mean_is_zero_not_nan() -> None:
    logits = torch.randn(2, 3, 5, requires_grad=True)
    target = torch.full((2, 3), -100)
    loss = label_smoothed_cross_entropy(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_seq2seq_loss_mean_and_token_count() -> None:
    pad = 0
    logits, target = _random_case((4, 6), 11, pad, seed=3)
    loss, n_tokens = seq2seq_loss(logits, target, epsilon=0.1, pad_id=pad)
    assert n_tokens.dtype == torch.int64 and n_tokens.item() == int((target != pad).sum())
    ref = _torch_reference(logits, target, 0.1, pad, "mean")
    torch.testing.assert_close(loss, ref.float(), rtol=1e-5, atol=1e-6)
    ref_sum = _torch_reference(logits, target, 0.1, pad, "sum")
    torch.testing.assert_close(loss * n_tokens, ref_sum.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "logits, target, kwargs, match",
    [
        (torch.randn(2, 3, 5), torch.zeros(2, 4, dtype=torch.long), {}, "shape"),
        (torch.randn(2, 5), torch.zeros(2), {}, "integer"),
        (torch.randn(2, 5), torch.zeros(2, dtype=torch.long), {"epsilon": 1.5}, "epsilon"),
        (torch.randn(2, 5), torch.zeros(2, dtype=torch.long), {"reduction": "avg"}, "reduction"),
    ],
)
def test_rejects_bad_inputs(logits, target, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        label_smoothed_cross_entropy(logits, target, **kwargs)
