"""Masked-LM masking: the 15% choice and the 80/10/10 split checked statistically on a large sample."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.errors import ConfigError
from attnkit.models import BertMLM, bert_preset
from attnkit.objectives.mlm import IGNORE, MaskingConfig, mask_tokens, mlm_loss

V, MASK, N_SPECIAL = 1000, 4, 5  # ids 0-4 are specials ([PAD] 0 ... [MASK] 4)
RANDOM_IDS = torch.arange(N_SPECIAL, V)


def sample(b: int = 256, t: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(N_SPECIAL, V, (b, t), generator=g)
    ids[:, 0], lengths = 2, torch.randint(t // 2, t + 1, (b,), generator=g)
    pad = torch.arange(t)[None, :] >= lengths[:, None]
    ids[torch.arange(b), lengths - 1] = 3  # [SEP] at the end of each row
    ids[pad] = 0
    return ids, ids >= N_SPECIAL


def within(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_proportions_on_a_large_sample():
    ids, maskable = sample()
    inputs, labels = mask_tokens(ids, maskable, mask_id=MASK, random_ids=RANDOM_IDS, generator=torch.Generator().manual_seed(1))
    chosen = labels != IGNORE
    n, k = int(maskable.sum()), int(chosen.sum())
    assert n > 90_000
    assert not chosen[~maskable].any() and torch.equal(inputs[~maskable], ids[~maskable])  # specials and padding untouched
    assert torch.equal(labels[chosen], ids[chosen])
    assert within(k, n, 0.15)
    masked = inputs[chosen] == MASK
    kept = inputs[chosen] == ids[chosen]
    randomised = ~masked & ~kept
    p_same = 1 / len(RANDOM_IDS)  # a random replacement may draw the original token
    assert within(int(masked.sum()), k, 0.8)
    assert within(int(randomised.sum()), k, 0.1 * (1 - p_same))
    assert within(int(kept.sum()), k, 0.1 + 0.1 * p_same)
    assert (inputs[chosen][randomised] >= N_SPECIAL).all()  # random tokens come from random_ids
    assert not (inputs[~chosen] == MASK).any()


def test_masking_is_dynamic_and_reproducible():
    ids, maskable = sample(8, 64)
    a = mask_tokens(ids, maskable, mask_id=MASK, random_ids=RANDOM_IDS, generator=torch.Generator().manual_seed(1))
    b = mask_tokens(ids, maskable, mask_id=MASK, random_ids=RANDOM_IDS, generator=torch.Generator().manual_seed(1))
    c = mask_tokens(ids, maskable, mask_id=MASK, random_ids=RANDOM_IDS, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_whole_word_masking_takes_every_piece():
    ids, maskable = sample(128, 256)
    g = torch.Generator().manual_seed(3)
    starts = torch.rand(ids.shape, generator=g) < 0.4  # a new word starts here; 1 / 0.4 = 2.5 pieces per word
    word_ids = starts.long().cumsum(1)
    inputs, labels = mask_tokens(ids, maskable, mask_id=MASK, random_ids=RANDOM_IDS, word_ids=word_ids,
                                 config=MaskingConfig(whole_word=True), generator=torch.Generator().manual_seed(4))
    chosen = labels != IGNORE
    n_words = n_chosen = 0
    for row in range(ids.shape[0]):
        for w in torch.unique(word_ids[row][maskable[row]]).tolist():
            pieces = (word_ids[row] == w) & maskable[row]
            picked = chosen[row][pieces]
            assert picked.all() or not picked.any(), "a word was masked in part"
            n_words += 1
            n_chosen += int(picked.any())
    assert within(n_chosen, n_words, 0.15)
    assert not chosen[~maskable].any()


def test_config_is_checked():
    with pytest.raises(ConfigError, match="random_prob"):
        MaskingConfig(mask_prob=0.9, random_prob=0.2)
    with pytest.raises(ConfigError, match="select_prob"):
        MaskingConfig(select_prob=0.0)


def test_mlm_training_reduces_the_loss():
    torch.manual_seed(0)
    cfg = bert_preset("bert-test", vocab_size=50, dropout=0.0)
    model = BertMLM(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(N_SPECIAL, 50, (1, 16)).repeat(8, 1)  # one sequence: each masked token is learnable from its position
    maskable = torch.ones_like(ids, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(80):
        inputs, labels = mask_tokens(ids, maskable, mask_id=MASK, random_ids=torch.arange(N_SPECIAL, 50), generator=g)
        loss, count = mlm_loss(model(inputs).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert count > 0
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
