"""UniLM generation: every token is the model's choice at the appended [MASK] under the seq2seq mask, built here by hand."""

from __future__ import annotations

import torch

from attnkit.generation.unilm import unilm_generate
from attnkit.models.bert import bert_preset
from attnkit.models.unilm import UnilmMLM

CLS, SEP, MASK = 2, 3, 4


def by_hand(n_source: int, n: int) -> torch.Tensor:
    """The seq2seq mask: the first ``n_source`` positions see each other; later ones see those and their own left."""
    m = torch.zeros(1, n, n, dtype=torch.bool)
    for i in range(n):
        for j in range(n):
            m[0, i, j] = j < n_source or (i >= n_source and j <= i)
    return m


def test_each_token_is_the_argmax_at_the_mask_under_the_seq2seq_mask():
    torch.manual_seed(0)
    model = UnilmMLM(bert_preset("bert-test", dropout=0.0, pooler=False)).eval()
    source = [10, 11, 12, 13]
    out = unilm_generate(model, source, cls_id=CLS, sep_id=SEP, mask_id=MASK, max_new_tokens=5)
    assert len(out) == 5  # no [SEP] from these random weights: the loop stops at max_new_tokens
    prefix = [CLS, *source, SEP]
    for t, token in enumerate(out):
        ids = torch.tensor([prefix + out[:t] + [MASK]])
        seg = torch.tensor([[0] * len(prefix) + [1] * (t + 1)])
        with torch.no_grad():
            logits = model(ids, segment_ids=seg, self_attention_mask=by_hand(len(prefix), ids.shape[1])).logits
        assert int(logits[0, -1].argmax()) == token
        bidirectional = model(ids, segment_ids=seg, self_attention_mask=torch.ones(1, ids.shape[1], ids.shape[1], dtype=torch.bool)).logits
        assert not torch.allclose(bidirectional[0, -2], logits[0, -2])  # the mask matters: the source cannot see the target


def test_stops_at_sep():
    torch.manual_seed(1)
    model = UnilmMLM(bert_preset("bert-test", dropout=0.0, pooler=False)).eval()
    with torch.no_grad():
        model.decoder.bias.fill_(-1e4)
        model.decoder.bias[SEP] = 1e4  # every prediction is [SEP]
    assert unilm_generate(model, [10, 11], cls_id=CLS, sep_id=SEP, mask_id=MASK) == []
