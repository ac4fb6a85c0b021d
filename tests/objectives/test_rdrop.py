"""R-Drop's loss (Liang et al. 2021, eq. 3) against torch.nn.functional.kl_div / cross_entropy and a
float64 numpy formula; ignored positions, identical passes and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnkit.objectives import rdrop_loss, symmetric_kl
from attnkit.objectives.classification import classification_loss

IGNORE = -100


def case(shape: tuple[int, ...], n_classes: int, seed: int, ignored: float = 0.3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two passes' logits ``shape + (C,)`` and targets ``shape`` with some positions ignored (never all)."""
    g = torch.Generator().manual_seed(seed)
    l1 = torch.randn(*shape, n_classes, generator=g) * 2
    l2 = l1 + torch.randn(*shape, n_classes, generator=g)  # a nearby second pass
    y = torch.randint(0, n_classes, shape, generator=g)
    y = y.masked_fill(torch.rand(shape, generator=g) < ignored, IGNORE)
    y.view(-1)[0] = 1
    return l1, l2, y


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_rdrop(l1: np.ndarray, l2: np.ndarray, y: np.ndarray, alpha: float, eps: float) -> float:
    """Eq. 3 with the cross-entropies averaged, written out in float64 per counted position."""
    total, n = 0.0, 0
    for idx in np.ndindex(*y.shape):
        if y[idx] == IGNORE:
            continue
        lp1, lp2 = np_log_softmax(l1[idx].astype(np.float64)), np_log_softmax(l2[idx].astype(np.float64))
        p1, p2 = np.exp(lp1), np.exp(lp2)
        ce = [-(1 - eps) * lp[y[idx]] - eps * lp.mean() for lp in (lp1, lp2)]  # smoothing mass eps/C on every class
        kl12, kl21 = np.sum(p1 * (lp1 - lp2)), np.sum(p2 * (lp2 - lp1))
        total += 0.5 * (ce[0] + ce[1]) + alpha * 0.5 * (kl12 + kl21)
        n += 1
    return total / n


@pytest.mark.parametrize("shape", [(6,), (3, 5)])
def test_symmetric_kl_matches_kl_div(shape: tuple[int, ...]) -> None:
    l1, l2, _ = case(shape, 7, seed=1)
    lp1, lp2 = F.log_softmax(l1, -1), F.log_softmax(l2, -1)
    # kl_div(input=log q, target=p) is p (log p - log q), elementwise: KL(p || q) once summed over classes
    kl12 = F.kl_div(lp2, lp1.exp(), reduction="none").sum(-1)
    kl21 = F.kl_div(lp1, lp2, log_target=True, reduction="none").sum(-1)
    got = symmetric_kl(l1, l2)
    assert got.shape == shape and got.dtype == torch.float32
    torch.testing.assert_close(got, 0.5 * (kl12 + kl21), rtol=1e-5, atol=1e-6)
    assert (got > 0).all()
    torch.testing.assert_close(symmetric_kl(l2, l1), got)  # symmetric


def test_symmetric_kl_matches_float64_formula_and_runs_in_float32() -> None:
    l1, l2, _ = case((4, 3), 9, seed=2)
    lp1, lp2 = np_log_softmax(l1.double().numpy()), np_log_softmax(l2.double().numpy())
    ref = 0.5 * ((np.exp(lp1) * (lp1 - lp2)).sum(-1) + (np.exp(lp2) * (lp2 - lp1)).sum(-1))
    torch.testing.assert_close(symmetric_kl(l1, l2), torch.from_numpy(ref).float(), rtol=1e-5, atol=1e-6)
    low = symmetric_kl(l1.bfloat16(), l2.bfloat16())  # bf16 logits (autocast): the divergence still in float32
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, symmetric_kl(l1.bfloat16().float(), l2.bfloat16().float()))


@pytest.mark.parametrize("shape", [(8,), (4, 6)])
@pytest.mark.parametrize("alpha, eps", [(0.0, 0.0), (1.0, 0.0), (0.7, 0.1), (4.0, 0.2)])
def test_loss_matches_float64_formula(shape: tuple[int, ...], alpha: float, eps: float) -> None:
    l1, l2, y = case(shape, 5, seed=3)
    loss, n = rdrop_loss(l1, l2, y, alpha=alpha, epsilon=eps, ignore_index=IGNORE)
    assert loss.dtype == torch.float32 and int(n) == int((y != IGNORE).sum())
    ref = np_rdrop(l1.numpy(), l2.numpy(), y.numpy(), alpha, eps)
    assert float(loss) == pytest.approx(ref, rel=1e-5)


@pytest.mark.parametrize("shape", [(8,), (4, 6)])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_alpha_zero_is_the_mean_of_the_two_cross_entropies(shape: tuple[int, ...], eps: float) -> None:
    l1, l2, y = case(shape, 5, seed=4)
    loss, n = rdrop_loss(l1, l2, y, alpha=0.0, epsilon=eps, ignore_index=IGNORE)

    def ce(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.reshape(-1, 5), y.reshape(-1), ignore_index=IGNORE, label_smoothing=eps)

    torch.testing.assert_close(loss, 0.5 * (ce(l1) + ce(l2)), rtol=1e-6, atol=1e-7)
    assert int(n) == int((y != IGNORE).sum())


def test_ignored_positions_change_nothing() -> None:
    l1, l2, y = case((4, 6), 5, seed=5, ignored=0.5)
    ignored = (y == IGNORE).unsqueeze(-1)  # (B, T, 1)
    g = torch.Generator().manual_seed(9)
    m1 = torch.where(ignored, torch.randn(l1.shape, generator=g) * 50, l1).requires_grad_()
    m2 = torch.where(ignored, torch.randn(l2.shape, generator=g) * 50, l2).requires_grad_()
    base, n = rdrop_loss(l1, l2, y, alpha=2.0, epsilon=0.1)
    moved, n2 = rdrop_loss(m1, m2, y, alpha=2.0, epsilon=0.1)
    assert torch.equal(base, moved) and int(n) == int(n2)
    moved.backward()
    assert (m1.grad[ignored.expand_as(m1)] == 0).all() and (m2.grad[ignored.expand_as(m2)] == 0).all()
    assert m1.grad.abs().sum() > 0  # the counted positions do learn


def test_identical_passes_give_plain_cross_entropy() -> None:
    """Without dropout both passes agree: the KL term vanishes, whatever alpha."""
    l1, _, y = case((4, 6), 5, seed=6)
    assert torch.equal(symmetric_kl(l1, l1.clone()), torch.zeros(4, 6))
    loss, n = rdrop_loss(l1, l1.clone(), y, alpha=10.0, epsilon=0.0)
    plain, n_plain = classification_loss(l1, y)
    torch.testing.assert_close(loss, plain, rtol=1e-6, atol=1e-7)
    assert int(n) == int(n_plain)


def test_nothing_counted_is_zero() -> None:
    l1, l2, _ = case((2, 3), 4, seed=7)
    loss, n = rdrop_loss(l1, l2, torch.full((2, 3), IGNORE), alpha=1.0)
    assert float(loss) == 0.0 and int(n) == 0


def test_bad_inputs() -> None:
    l1, l2, y = case((3,), 4, seed=8)
    with pytest.raises(ValueError, match=r"logits shapes \(3, 4\) and \(3, 5\) differ"):
        rdrop_loss(l1, torch.zeros(3, 5), y, alpha=1.0)
    with pytest.raises(ValueError, match=r"alpha=-1.0 is not allowed"):
        rdrop_loss(l1, l2, y, alpha=-1.0)
    with pytest.raises(ValueError, match="target shape"):
        rdrop_loss(l1, l2, y[:2], alpha=1.0)
