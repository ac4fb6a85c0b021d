"""ListOps data for training: sharded generation, token ids, padded batches, and a padding-blind classifier."""

from __future__ import annotations

import torch

from attnkit.data.listops import CLS_ID, PAD_ID, TOKEN_IDS, ListOpsConfig, evaluate, generate, generate_encoded
from attnkit.models.encoder_classifier import EncoderClassifier, classifier_preset
from attnkit.training.listops import ListOpsSplit, collate

SHORT = ListOpsConfig(min_len=10, max_len=50)


def test_sharded_generation_is_the_shards_and_independent_of_workers() -> None:
    flat, lengths, labels = generate_encoded(1200, 5, "validation", SHORT, workers=2)
    assert (flat, lengths, labels) == generate_encoded(1200, 5, "validation", SHORT, workers=1)
    shard0 = generate(1000, 5, "validation:0", SHORT) + generate(200, 5, "validation:1", SHORT)
    names = {i: t for t, i in TOKEN_IDS.items()}
    pos = 0
    for (tokens, label), n, y in zip(shard0, lengths, labels):
        assert [names[b] for b in flat[pos : pos + n]] == tokens and y == label == evaluate(tokens)
        pos += n


def test_collate_pads_to_a_multiple_and_masks() -> None:
    split = ListOpsSplit.from_encoded(*generate_encoded(6, 0, "test", SHORT))
    b = collate(split, [0, 3, 5], pad_to=16, cls=True)
    lens = split.lengths()
    assert b.ids.shape[1] % 16 == 0 and b.ids.shape[1] >= max(lens[i] for i in (0, 3, 5)) + 1
    for r, i in enumerate((0, 3, 5)):
        row = b.ids[r]
        assert row[0] == CLS_ID and row[1 : 1 + lens[i]].tolist() == split.ids[split.offsets[i] : split.offsets[i + 1]].tolist()
        assert (row[1 + lens[i] :] == PAD_ID).all() and b.attention_mask[r].sum() == lens[i] + 1
    assert b.labels.tolist() == [split.labels[i].item() for i in (0, 3, 5)]


def test_padding_does_not_change_the_logits() -> None:
    torch.manual_seed(0)
    model = EncoderClassifier(classifier_preset("listops-tiny")).eval()
    split = ListOpsSplit.from_encoded(*generate_encoded(4, 1, "test", SHORT))
    batch = collate(split, [0, 1, 2, 3], pad_to=32)
    with torch.no_grad():
        together = model(batch.ids, attention_mask=batch.attention_mask).logits  # (4, 10)
        for r in range(4):
            alone = collate(split, [r])
            assert alone.attention_mask is None  # one row, no padding
            torch.testing.assert_close(model(alone.ids).logits[0], together[r], atol=1e-5, rtol=1e-5)
