"""XLNet's two-stream attention against transformers' XLNetLMHeadModel with random weights."""

from __future__ import annotations

import pytest
import torch

from attnkit.hub.xlnet import xlnet_from_hf

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    cfg = transformers.XLNetConfig(vocab_size=80, d_model=32, n_layer=2, n_head=4, d_inner=48, dropout=0.0, mem_len=None)
    hf = transformers.XLNetLMHeadModel(cfg).eval()
    return hf, xlnet_from_hf(hf).eval()


def permutation_inputs(B: int, T: int, P: int, seed: int):
    """A random factorisation order per row; the last P positions of the order are predicted."""
    g = torch.Generator().manual_seed(seed)
    perm_mask = torch.zeros(B, T, T)
    mapping = torch.zeros(B, P, T)
    for b in range(B):
        order = torch.randperm(T, generator=g)
        rank = torch.empty(T, dtype=torch.long)
        rank[order] = torch.arange(T)
        perm_mask[b] = (rank[None, :] >= rank[:, None]).float()  # i may not see j at or after it in the order
        for p, t in enumerate(order[T - P :].tolist()):
            mapping[b, p, t] = 1.0
    return perm_mask, mapping


@pytest.mark.parametrize("segments", [False, True])
def test_query_stream_logits_match(pair, segments):
    hf, ours = pair
    ids = torch.randint(6, 80, (3, 11))
    perm_mask, mapping = permutation_inputs(3, 11, 4, seed=1)
    seg = torch.tensor([[0] * 6 + [1] * 5] * 3) if segments else None
    with torch.no_grad():
        ref = hf(ids, perm_mask=perm_mask, target_mapping=mapping, token_type_ids=seg).logits
        got = ours(ids, perm_mask=perm_mask, target_mapping=mapping, segment_ids=seg).logits
    assert got.shape == ref.shape == (3, 4, 80)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_content_stream_logits_match(pair):
    hf, ours = pair
    ids = torch.randint(6, 80, (2, 9))
    mask = torch.ones(2, 9)
    mask[1, 6:] = 0
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask).logits
        got = ours(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=1e-5)


def test_a_query_never_sees_its_own_token(pair):
    _, ours = pair
    ids = torch.randint(6, 80, (1, 8))
    perm_mask, mapping = permutation_inputs(1, 8, 3, seed=2)
    target = int(mapping[0, 0].argmax())
    changed = ids.clone()
    changed[0, target] = 7 if ids[0, target] != 7 else 8
    with torch.no_grad():
        a = ours(ids, perm_mask=perm_mask, target_mapping=mapping).logits[0, 0]
        b = ours(changed, perm_mask=perm_mask, target_mapping=mapping).logits[0, 0]
    torch.testing.assert_close(a, b)


def test_export_loads_in_transformers_with_the_same_logits(pair, tmp_path):
    from attnkit.hub.xlnet import save_hf_xlnet

    _, ours = pair
    save_hf_xlnet(ours, tmp_path / "hf")
    back = transformers.XLNetLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(6, 80, (2, 10))
    perm_mask, mapping = permutation_inputs(2, 10, 3, seed=3)
    with torch.no_grad():
        ref = back(ids, perm_mask=perm_mask, target_mapping=mapping).logits
        got = ours(ids, perm_mask=perm_mask, target_mapping=mapping).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("reuse_len", [None, 3])
def test_memory_matches_transformers_over_three_segments(reuse_len):
    """Transformer-XL's recurrence: each segment attends to the cached content states of the ones before."""
    torch.manual_seed(7)
    cfg = transformers.XLNetConfig(vocab_size=80, d_model=32, n_layer=2, n_head=4, d_inner=48, dropout=0.0, mem_len=5,
                                   reuse_len=reuse_len)
    hf = transformers.XLNetLMHeadModel(cfg).eval()
    ours = xlnet_from_hf(hf).eval()
    hf_mems = our_mems = None
    for seg in range(3):
        ids = torch.randint(6, 80, (2, 6))
        types = torch.tensor([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
        perm_mask, mapping = permutation_inputs(2, 6, 2, seed=10 + seg)
        pad = torch.ones(2, 6)
        pad[1, 5] = 0
        with torch.no_grad():
            ref = hf(ids, mems=hf_mems, perm_mask=perm_mask, target_mapping=mapping, token_type_ids=types, attention_mask=pad,
                     use_mems=True)
            got = ours(ids, mems=our_mems, perm_mask=perm_mask, target_mapping=mapping, segment_ids=types, attention_mask=pad,
                       mem_len=5, reuse_len=reuse_len)
        torch.testing.assert_close(got.logits, ref.logits, atol=1e-5, rtol=1e-5)
        assert len(got.mems) == 2
        for a, b in zip(got.mems, ref.mems):  # Hugging Face keeps memory time-first
            torch.testing.assert_close(a, b.transpose(0, 1), atol=1e-5, rtol=1e-5)
        hf_mems, our_mems = ref.mems, got.mems
    assert our_mems[0].shape[1] == 5


def test_memory_changes_the_output_and_content_stream_matches():
    torch.manual_seed(8)
    cfg = transformers.XLNetConfig(vocab_size=80, d_model=32, n_layer=2, n_head=4, d_inner=48, dropout=0.0, mem_len=4)
    hf = transformers.XLNetLMHeadModel(cfg).eval()
    ours = xlnet_from_hf(hf).eval()
    first, second = torch.randint(6, 80, (1, 5)), torch.randint(6, 80, (1, 5))
    with torch.no_grad():
        mems = ours(first, mem_len=4).mems
        with_memory = ours(second, mems=mems).logits
        ref = hf(second, mems=hf(first, use_mems=True).mems).logits
        alone = ours(second).logits
    torch.testing.assert_close(with_memory, ref, atol=1e-5, rtol=1e-5)
    assert (with_memory - alone).abs().max() > 1e-3
