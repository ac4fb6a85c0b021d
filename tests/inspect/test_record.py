"""attnkit.inspect.attentions on whole models: the same weights as the models' own reference
path (``need_weights=True``), recorded from an ordinary fast forward pass, for chosen layers only;
rollout and word merging against computations written out here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnkit.attention.base import AttentionKernel
from attnkit.inspect import Recorder, attention_groups, attentions, merge, rollout, rollout_by_layer, word_groups
from attnkit.models import GPT, BertModel, Transformer, bert_preset, gpt_preset, preset
from attnkit.models.transformer import AttentionConfig
from attnkit.positions.config import PositionConfig

ATOL = 1e-6


def _gpt(kind: str = "scaled_dot", position: str = "none", n_kv_heads: int | None = None, **params) -> GPT:
    torch.manual_seed(0)
    att = AttentionConfig(kind=kind, params=params, position=PositionConfig(kind=position))
    extra = {} if n_kv_heads is None else {"n_kv_heads": n_kv_heads}
    return GPT(gpt_preset("gpt-tiny", attention=att, **extra)).eval()


def _ids(vocab: int, t: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (2, t), generator=g)
    keep = torch.ones(2, t, dtype=torch.long)
    keep[0, :3] = 0  # left padding, as batched prompts have
    return ids, keep


@pytest.mark.parametrize("kind,params", [("scaled_dot", {}), ("sliding_window", {"window": 5}), ("lsh", {"n_hashes": 2, "n_buckets": 2, "chunk": 4}),
                                         ("routing", {"n_clusters": 2, "chunk": 4}), ("strided", {"stride": 3})])
def test_gpt_attentions_equal_the_reference_path(kind: str, params: dict) -> None:
    model = _gpt(kind, **params)
    ids, keep = _ids(96)
    ref = model(ids, attention_mask=keep, need_weights=True).attentions
    att = attentions(model, ids, attention_mask=keep)
    assert att.names == ["self"] and att.layers["self"] == [0, 1]
    assert len(att["self"]) == 2 and att["self"][0].shape == (2, 4, 12, 12)
    for mine, theirs in zip(att["self"], ref):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=ATOL)


@pytest.mark.parametrize("position,n_kv_heads", [("rotary", 2), ("alibi", None), ("t5_bias", None)])
def test_positions_and_grouped_keys_are_seen_as_the_kernel_sees_them(position: str, n_kv_heads: int | None) -> None:
    """Rotated queries and keys, positional score biases and shared key heads reach the recomputation."""
    model = _gpt(position=position, n_kv_heads=n_kv_heads)
    ids, keep = _ids(96)
    ref = model(ids, attention_mask=keep, need_weights=True).attentions
    att = attentions(model, ids, attention_mask=keep)
    for mine, theirs in zip(att["self"], ref):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=ATOL)


def test_a_positional_call_that_bypasses_the_kernel_module_is_still_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    """On CUDA, ALiBi and T5 biases run fused into FlexAttention without calling the kernel module;
    simulated here by a positional call that runs the kernel's forward directly (no hooks fire)."""
    from attnkit.positions import hook as positions_hook

    model = _gpt(position="alibi")
    ids, keep = _ids(96)
    ref = model(ids, attention_mask=keep, need_weights=True).attentions

    def fused(self, q, k, v, *, mask=None, bias=None, causal=False, need_weights=False):
        pos = self.position.bias(q, k, self.q_pos, causal=causal, scale=positions_hook.kernel_scale(self.kernel, q.shape[-1]),
                                 q_offset=self.offset)
        return self.kernel.forward(q, k, v, mask=mask, bias=pos if bias is None else bias + pos, causal=causal)

    monkeypatch.setattr(positions_hook.BiasedKernel, "__call__", fused)
    att = attentions(model, ids, attention_mask=keep, rows=[5, 11])
    assert att.layers["self"] == [0, 1]
    for mine, theirs in zip(att["self"], ref):
        torch.testing.assert_close(mine, theirs[:, :, [5, 11]], rtol=0, atol=ATOL)


def test_only_the_layers_heads_and_rows_asked_for_are_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run keeps its fast path: a kernel's dense reference path is never called."""
    model = _gpt()
    ids, keep = _ids(96)
    ref = model(ids, attention_mask=keep, need_weights=True).attentions

    def refuse(*a, **k):
        raise AssertionError("the dense reference path was used")

    monkeypatch.setattr(AttentionKernel, "weights", refuse)
    att = attentions(model, ids, attention_mask=keep, layers=[1], heads=[2, 3], rows=[0, 11])
    assert att.layers["self"] == [1]
    (w,) = att["self"]
    assert w.shape == (2, 2, 2, 12)
    torch.testing.assert_close(w, ref[1][:, [2, 3]][:, :, [0, 11]], rtol=0, atol=ATOL)


def test_encoder_decoder_has_three_groups_equal_to_the_reference() -> None:
    torch.manual_seed(0)
    model = Transformer(preset("transformer-tiny")).eval()
    g = torch.Generator().manual_seed(1)
    src = torch.randint(4, 64, (2, 9), generator=g)
    src[0, 6:] = model.config.pad_id  # source padding: the fast pass gives it as a score bias
    tgt = torch.randint(4, 64, (2, 5), generator=g)
    ref = model(src, tgt, need_weights=True).attentions
    att = attentions(model, src, tgt)
    assert att.names == ["encoder", "decoder", "cross"]
    assert att["cross"][0].shape == (2, 4, 5, 9)
    for mine, key in (("encoder", "encoder"), ("decoder", "decoder_self"), ("cross", "decoder_cross")):
        for a, b in zip(att[mine], ref[key]):
            torch.testing.assert_close(a, b, rtol=0, atol=ATOL)


@pytest.mark.parametrize("shared", [False, True])
def test_bert_returns_attentions_and_inspect_equals_them(shared: bool) -> None:
    torch.manual_seed(0)
    model = BertModel(bert_preset("bert-test", share_layers=shared)).eval()
    ids, keep = _ids(99, 10)
    out = model(ids, attention_mask=keep, need_weights=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 10, 10)
    assert (out.attentions[0][0, :, :, :3] == 0).all()  # padding keys get no weight
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 4, 10))
    assert model(ids, attention_mask=keep).attentions is None
    att = attentions(model, ids, attention_mask=keep)
    assert att.layers["self"] == [0, 1]  # a shared layer is recorded at each depth
    for a, b in zip(att["self"], out.attentions):
        torch.testing.assert_close(a, b, rtol=0, atol=ATOL)
    assert len(attention_groups(model)) == (1 if shared else 2)


def test_recorder_restores_the_model_and_removes_its_hooks() -> None:
    model = _gpt()
    ids, _ = _ids(96)
    with Recorder(model, layers=[0]) as rec:
        model(ids)
    assert rec.result().layers["self"] == [0]
    assert all(not m.kernel._forward_hooks for _, m in attention_groups(model))
    model.train()
    attentions(model, ids)
    assert model.training


def test_rollout_equals_the_product_written_out() -> None:
    g = torch.Generator().manual_seed(0)
    layers = [torch.softmax(torch.randn(1, 3, 4, 4, generator=g), -1) for _ in range(3)]
    mats = []
    for w in layers:
        a = w[0].double().numpy().mean(0)
        a = 0.5 * a + 0.5 * np.eye(4)
        mats.append(a / a.sum(1, keepdims=True))
    expect = mats[2] @ mats[1] @ mats[0]
    got = rollout(layers)
    assert got.shape == (1, 4, 4)
    np.testing.assert_allclose(got[0].double().numpy(), expect, atol=1e-6)
    np.testing.assert_allclose(rollout(layers, start=2)[0].double().numpy(), mats[2], atol=1e-6)
    by_layer = rollout_by_layer(layers)
    np.testing.assert_allclose(by_layer[1][0].double().numpy(), mats[1] @ mats[0], atol=1e-6)


def test_word_pieces_merge_into_words() -> None:
    tokens = ["[CLS]", "un", "##believ", "##able", "news", "[SEP]"]
    words, group = word_groups(tokens)
    assert words == ["[CLS]", "unbelievable", "news", "[SEP]"] and group == [0, 1, 1, 1, 2, 3]
    assert word_groups(["<s>", "Ġthe", "Ġcat", "s", "</s>"])[0] == ["<s>", "Ġthe", "Ġcats", "</s>"]
    assert word_groups(["a", "b"], [0, 0])[1] == [0, 0]
    w = torch.softmax(torch.randn(2, 6, 6), -1)
    m = merge(w, group)
    assert m.shape == (2, 4, 4)
    expect = torch.zeros(2, 4, 4)
    for i in range(6):
        for j in range(6):
            expect[:, group[i], group[j]] += w[:, i, j] / group.count(group[i])
    torch.testing.assert_close(m, expect)
    torch.testing.assert_close(m.sum(-1), torch.ones(2, 4))
