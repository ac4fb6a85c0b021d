"""SpanBERT's span boundary objective (Joshi et al. 2020, section 3.2) against a per-token computation written from eq. 1-2."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.errors import ConfigError
from attnkit.models.bert import bert_preset
from attnkit.models.bert_pretraining import BertPretraining, BertPretrainingConfig
from attnkit.objectives.mlm import IGNORE, MaskingConfig
from attnkit.objectives.span_boundary import span_boundaries
from attnkit.objectives.span_masking import span_mask_tokens
from attnkit.training.mlm import mask_batch


def spans_batch(seed: int = 0, B: int = 6, T: int = 40):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 90, (B, T), generator=g)
    maskable = torch.ones(B, T, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS], [SEP]
    maskable[2, 30:] = False  # padding
    starts = torch.rand(B, T, generator=g) < 0.6
    word_ids = torch.cumsum(starts.long(), 1)
    return ids, maskable, word_ids, g


@pytest.mark.parametrize("seed", range(4))
def test_boundaries_are_the_tokens_just_outside_each_span(seed):
    ids, maskable, word_ids, g = spans_batch(seed)
    _, labels, span_index = span_mask_tokens(ids, maskable, word_ids, mask_id=4, random_ids=torch.arange(5, 90), select_prob=0.3,
                                             generator=g, return_spans=True)
    assert torch.equal(span_index >= 0, labels != IGNORE)
    left, right, offset = span_boundaries(span_index)
    for b in range(ids.shape[0]):
        for k in span_index[b].unique().tolist():
            if k < 0:
                continue
            where = (span_index[b] == k).nonzero().squeeze(1).tolist()  # the naive loop: the span's positions
            s, e = min(where), max(where)
            assert where == list(range(s, e + 1))  # a span is contiguous
            for t in where:
                assert (left[b, t], right[b, t], offset[b, t]) == (s - 1, e + 1, t - s)
            assert span_index[b, s - 1] != k and span_index[b, e + 1] != k
            assert labels[b, s - 1] == IGNORE or span_index[b, s - 1] >= 0  # outside this span (maybe another one)


def tiny_model() -> BertPretraining:
    torch.manual_seed(0)
    enc = bert_preset("bert-test", d_model=32, n_heads=4, d_ff=64, d_embed=16, vocab_size=90, dropout=0.0)
    return BertPretraining(BertPretrainingConfig(encoder=enc, pair_task="none", span_boundary=True)).eval()


def test_sbo_logits_follow_equations_1_and_2_token_by_token():
    model = tiny_model()
    ids, maskable, word_ids, g = spans_batch(1)
    from attnkit.data.pretraining import PretrainingBatch

    batch = PretrainingBatch(ids, torch.zeros_like(ids), maskable.long(), maskable, word_ids, None)
    batch = mask_batch(batch, MaskingConfig(span=True, span_boundary=True, select_prob=0.3), mask_id=4,
                       random_ids=torch.arange(5, 90), generator=g)
    out = model(batch.ids, attention_mask=torch.ones_like(ids), positions=batch.mlm_positions,
                boundaries=(batch.sbo_left, batch.sbo_right, batch.sbo_offset))
    states = out.encoder.last_hidden  # (B, T, H)
    head, decoder = model.sbo, model.mlm.decoder
    for r in range(ids.shape[0]):
        for j in range(batch.mlm_positions.shape[1]):
            if batch.sbo_targets[r, j] == IGNORE:
                continue
            h0 = torch.cat([states[r, batch.sbo_left[r, j]], states[r, batch.sbo_right[r, j]], head.positions.weight[batch.sbo_offset[r, j]]])
            h1 = F.layer_norm(F.gelu(h0 @ head.w1.weight.T + head.w1.bias), (32,), head.norm1.weight, head.norm1.bias, 1e-12)
            y = F.layer_norm(F.gelu(h1 @ head.w2.weight.T + head.w2.bias), (16,), head.norm2.weight, head.norm2.bias, 1e-12)
            want = y @ model.mlm.bert.embed.tokens.weight.T + decoder.bias  # the output layer tied to the token embeddings
            torch.testing.assert_close(out.sbo_logits[r, j], want, atol=1e-5, rtol=1e-5)
    assert torch.equal(batch.sbo_targets[batch.sbo_targets != IGNORE], batch.mlm_targets[batch.sbo_targets != IGNORE])


def test_the_loss_adds_the_sbo_term_to_the_masked_lm_term():
    from attnkit.data.pretraining import PretrainingBatch
    from attnkit.training.mlm import pretraining_forward

    model = tiny_model()
    ids, maskable, word_ids, g = spans_batch(2)
    batch = mask_batch(PretrainingBatch(ids, torch.zeros_like(ids), maskable.long(), maskable, word_ids, None),
                       MaskingConfig(span=True, span_boundary=True), mask_id=4, random_ids=torch.arange(5, 90), generator=g)
    total, mlm, n, out = pretraining_forward(model, batch)
    keep = batch.sbo_targets != IGNORE
    sbo = F.cross_entropy(out.sbo_logits[keep], batch.sbo_targets[keep])
    mlm_ref = F.cross_entropy(out.mlm_logits[batch.mlm_targets != IGNORE], batch.mlm_targets[batch.mlm_targets != IGNORE])
    torch.testing.assert_close(mlm, mlm_ref)
    torch.testing.assert_close(total, mlm_ref + sbo)


def test_span_boundary_needs_span_masking():
    with pytest.raises(ConfigError, match="span_boundary"):
        MaskingConfig(span_boundary=True)
