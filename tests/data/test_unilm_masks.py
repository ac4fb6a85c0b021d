"""UniLM's self-attention masks against BERT's padding mask, GPT's causal mask and the seq2seq definition, in masks and in outputs."""

from __future__ import annotations

from collections import Counter

import torch

from attnkit.attention.masks import causal_mask, padding_mask
from attnkit.data.unilm import UNILM_MIXTURE, pick_kind, split_segments, unilm_mask
from attnkit.models.bert import bert_preset
from attnkit.models.bert_heads import BertMLM
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.models.unilm import UnilmMLM

IDS = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 0, 0, 0]])
REAL = (IDS != 0).long()


def real_rows(mask: torch.Tensor) -> torch.Tensor:
    """The rows of real queries, flattened (padding queries are not defined by the masks compared against)."""
    return mask[REAL.bool()]


def test_bidirectional_is_berts_padding_mask():
    bert = padding_mask(IDS, 0)[:, 0].expand(2, 6, 6)  # (B, T, T)
    assert torch.equal(real_rows(unilm_mask("bidirectional", REAL)), real_rows(bert))


def test_left_to_right_is_gpts_causal_mask_and_right_to_left_its_mirror():
    gpt = causal_mask(6, 6)[None] & padding_mask(IDS, 0)[:, 0]
    assert torch.equal(real_rows(unilm_mask("left_to_right", REAL)), real_rows(gpt))
    full = torch.ones(1, 6, dtype=torch.long)
    assert torch.equal(unilm_mask("right_to_left", full)[0], unilm_mask("left_to_right", full)[0].T)


def test_seq2seq_follows_its_definition():
    seg = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 0, 0, 0]])
    got = unilm_mask("seq2seq", REAL, seg)
    for b in range(2):
        for i in range(6):
            for j in range(6):
                if not REAL[b, i]:
                    want = bool(REAL[b, j])
                elif seg[b, i] == 0:
                    want = bool(REAL[b, j]) and seg[b, j] == 0
                else:
                    want = bool(REAL[b, j]) and (seg[b, j] == 0 or j <= i)
                assert bool(got[b, i, j]) == want, (b, i, j)


def test_outputs_bidirectional_equals_bert_and_left_to_right_is_causal():
    torch.manual_seed(0)
    cfg = bert_preset("bert-test", dropout=0.0, pooler=False)
    model = UnilmMLM(cfg).eval()
    plain = BertMLM(cfg).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        ours = model(IDS, self_attention_mask=unilm_mask("bidirectional", REAL)).logits
        ref = plain(IDS, attention_mask=REAL).logits
        torch.testing.assert_close(ours[REAL.bool()], ref[REAL.bool()], atol=1e-5, rtol=1e-5)
        changed = IDS.clone()
        changed[0, 4] = 20
        l2r = unilm_mask("left_to_right", torch.ones_like(IDS[:1]))
        a = model(IDS[:1], self_attention_mask=l2r).logits
        b = model(changed[:1], self_attention_mask=l2r).logits
        torch.testing.assert_close(a[0, :4], b[0, :4])  # the future does not leak
        assert not torch.allclose(a[0, 4:], b[0, 4:])


def test_left_to_right_attention_matches_gpts_causal_attention():
    """The same attention layer under the UniLM left-to-right mask and under a causal GPT's is_causal path."""
    torch.manual_seed(1)
    gpt = GPT(GPTConfig(vocab_size=50, context=8, n_layers=1, n_heads=2, d_model=16, dropout=0.0)).eval()
    attn = gpt.decoder.layers[0].self_attn
    x = torch.randn(2, 8, 16)
    with torch.no_grad():
        causal, _ = attn(x, causal=True)
        masked, _ = attn(x, mask=unilm_mask("left_to_right", torch.ones(2, 8))[:, None])
    torch.testing.assert_close(causal, masked, atol=1e-5, rtol=1e-5)


def test_mixture_and_segments():
    g = torch.Generator().manual_seed(2)
    counts = Counter(pick_kind(UNILM_MIXTURE, g) for _ in range(3000))
    for kind, share in UNILM_MIXTURE.items():
        assert abs(counts[kind] / 3000 - share) < 0.03
    maskable = REAL.bool().clone()
    maskable[:, 0] = False  # [CLS]
    seg = split_segments(REAL, maskable, g)
    for row, real in zip(seg.tolist(), REAL.tolist()):
        cut = row.index(1)
        assert cut >= 2 and all(v == 1 for v, r in zip(row[cut:], real[cut:]) if r) and row[:cut] == [0] * cut


def test_head_at_positions_equals_the_full_output_gathered():
    """``positions`` runs the head on a few rows only: the same logits as the full output there (BERT and UniLM)."""
    torch.manual_seed(0)
    cfg = bert_preset("bert-test", dropout=0.0, pooler=False)
    model = UnilmMLM(cfg).eval()
    pos = torch.tensor([[1, 3], [0, 2]])  # (B, 2)
    rows = torch.arange(2)[:, None]
    with torch.no_grad():
        for kw in ({"attention_mask": REAL}, {"self_attention_mask": unilm_mask("left_to_right", REAL)}):
            full = model(IDS, **kw).logits  # (B, T, V)
            some = model(IDS, positions=pos, **kw).logits  # (B, 2, V)
            torch.testing.assert_close(some, full[rows, pos], atol=1e-6, rtol=1e-6)
