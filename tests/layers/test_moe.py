"""The Switch layer and its router losses against transformers' SwitchTransformers (router, experts, loss functions)."""

from __future__ import annotations

import pytest
import torch

from attnkit.layers.moe import MoEConfig, SwitchFFN, expert_load, mark_padding
from attnkit.objectives.moe import load_balancing_loss, router_z_loss

st = pytest.importorskip("transformers.models.switch_transformers.modeling_switch_transformers")


def hf_losses(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' two loss functions on ``(groups, tokens, experts)`` logits, routed by the argmax."""
    probs = torch.softmax(logits, dim=-1)
    return st.load_balancing_loss_func(probs, probs.argmax(-1)), st.router_z_loss_func(logits)


def test_router_losses_equal_transformers_on_the_same_logits():
    torch.manual_seed(0)
    logits = torch.randn(1, 40, 6) * 2
    balance, z = hf_losses(logits)
    torch.testing.assert_close(load_balancing_loss(logits), balance)
    torch.testing.assert_close(router_z_loss(logits), z)
    uniform = torch.zeros(1, 12, 4)
    uniform[0, torch.arange(12), torch.arange(12) % 4] = 5.0  # every expert gets a quarter
    assert load_balancing_loss(uniform) == pytest.approx(float(hf_losses(uniform)[0]))


def test_padding_is_left_out_of_the_losses():
    torch.manual_seed(1)
    logits = torch.randn(3, 10, 4)
    keep = torch.ones(3, 10, dtype=torch.bool)
    keep[1, 6:] = False
    keep[2, 3:] = False
    balance, z = hf_losses(logits[keep][None])  # transformers' functions on the real tokens alone
    torch.testing.assert_close(load_balancing_loss(logits, keep), balance)
    torch.testing.assert_close(router_z_loss(logits, keep), z)
    assert not torch.isclose(load_balancing_loss(logits), load_balancing_loss(logits, keep))


def switch_pair(capacity: int, tokens: int, n_experts: int = 4, d: int = 16, d_ff: int = 24):
    """Our layer and transformers' SparseMLP with the same router and expert weights and the same capacity."""
    torch.manual_seed(2)
    cfg = st.SwitchTransformersConfig(d_model=d, d_ff=d_ff, num_experts=n_experts, expert_capacity=capacity, router_jitter_noise=0.0,
                                      dropout_rate=0.0, dense_act_fn="relu", router_bias=False)
    hf = st.SwitchTransformersSparseMLP(cfg).eval()
    factor = capacity * n_experts / tokens  # ceil(factor * tokens / n_experts) = capacity
    ours = SwitchFFN(d, d_ff, "relu", 0.0, bias=False, config=MoEConfig(n_experts=n_experts, capacity_factor=max(factor, 1e-9))).eval()
    ours.capacity_factor = factor
    with torch.no_grad():
        ours.router.weight.copy_(hf.router.classifier.weight)
        for i in range(n_experts):  # Linear's (out, in) weights into the stacked (in, out) slices
            ours.w1.weight[i].copy_(hf.experts[f"expert_{i}"].wi.weight.t())
            ours.w2.weight[i].copy_(hf.experts[f"expert_{i}"].wo.weight.t())
    return ours, hf


@pytest.mark.parametrize("capacity", [2, 12, 0])
def test_layer_equals_switch_sparse_mlp_dropped_tokens_included(capacity):
    """Capacity 2 drops some tokens, 12 none, 0 every one (the all-dropped case: the layer outputs 0)."""
    ours, hf = switch_pair(capacity, tokens=12)
    x = torch.randn(1, 12, 16)
    with torch.no_grad():
        got, want = ours(x), hf(x)
        dispatched, _, logits = hf.router(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ours.router_logits, logits)
    dropped_rows = dispatched.sum(-1)[0] == 0
    assert torch.equal(got[0].abs().sum(-1) == 0, dropped_rows)
    if capacity == 0:
        assert dropped_rows.all() and not got.any()
    balance, z = hf_losses(logits)  # the losses ignore capacity: they use the router's choice
    torch.testing.assert_close(load_balancing_loss(ours.router_logits), balance)
    torch.testing.assert_close(router_z_loss(ours.router_logits), z)


def test_capacity_and_load_statistics_follow_the_real_tokens():
    layer = SwitchFFN(8, 16, config=MoEConfig(n_experts=2, capacity_factor=1.0)).train()
    x = torch.randn(2, 5, 8)
    layer.keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    out = layer(x)
    assert not out[1, 2:].any()  # padding is never routed
    assert layer.load.sum() == 7 and layer.capacity(7) == 4
    stats = expert_load(layer)
    assert set(stats) == {"moe_load_cv", "moe_max_load", "moe_dropped"} and 0 <= stats["moe_dropped"] < 1
    assert layer.load.sum() == 0  # read and reset


def test_models_take_switch_ffn_from_config_and_mark_padding(tmp_path):
    import attnkit
    from attnkit.models.bert import BertModel, bert_preset
    from attnkit.models.gpt import GPT, GPTConfig
    from attnkit.models.transformer import Transformer, preset

    moe = MoEConfig(n_experts=3)
    gpt = GPT(GPTConfig(vocab_size=40, context=8, n_layers=1, n_heads=2, d_model=16, ffn="switch", moe=moe))
    bert = BertModel(bert_preset("bert-test", ffn="switch", moe=moe))
    t5 = Transformer(preset("transformer-tiny", ffn="switch", moe=moe))
    for model in (gpt, bert, t5):
        assert all(isinstance(layer.ffn, SwitchFFN) for layer in model.modules() if hasattr(layer, "res_ffn"))
    t5.save_pretrained(tmp_path / "t5")
    assert isinstance(attnkit.load(tmp_path / "t5").decoder.layers[0].ffn, SwitchFFN)
    mark_padding(t5)
    src = torch.tensor([[5, 6, 7, 0]])
    tgt = torch.tensor([[1, 5, 0]])
    t5(src, tgt)
    assert torch.equal(t5.encoder.layers[0].ffn.keep_used, src != 0)
    assert torch.equal(t5.decoder.layers[0].ffn.keep_used, tgt != 0)


def test_top2_is_the_renormalised_mix_of_the_two_best_experts():
    """GShard's top-2 against a loop over tokens; with room for one token per expert, first choices win the places."""
    torch.manual_seed(3)
    layer = SwitchFFN(8, 12, config=MoEConfig(n_experts=4, top_k=2, capacity_factor=10.0)).eval()
    x = torch.randn(1, 6, 8)
    with torch.no_grad():
        got = layer(x)
        want = torch.zeros_like(x)
        for t in range(6):
            p = torch.softmax(layer.router(x[0, t]), -1)
            top = p.topk(2)
            for g, e in zip(top.values / top.values.sum(), top.indices.tolist()):
                want[0, t] += g * layer.expert(e, x[0, t])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    layer.capacity_factor = 4 / (2 * 6)  # capacity 1: one place per expert
    with torch.no_grad():
        got = layer(x)
        want = torch.zeros_like(x)
        probs = torch.softmax(layer.router(x[0]), -1)
        top = probs.topk(2)
        gates = top.values / top.values.sum(-1, keepdim=True)
        for e in range(4):  # the place goes to the first token choosing e first, else to the first choosing it second
            firsts = [t for t in range(6) if top.indices[t, 0] == e]
            seconds = [t for t in range(6) if top.indices[t, 1] == e]
            t, c = (firsts[0], 0) if firsts else (seconds[0], 1) if seconds else (None, None)
            if t is not None:
                want[0, t] += gates[t, c] * layer.expert(e, x[0, t])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("padded", [False, True])
def test_the_layer_s_router_losses_equal_the_reference_losses_and_gradients(padded: bool) -> None:
    """``router_losses`` from a forward's softmax and first-choice counts against :func:`load_balancing_loss` and
    :func:`router_z_loss` (themselves checked against transformers above): values and the router's gradient."""
    from attnkit.objectives.moe import router_losses

    torch.manual_seed(4)
    layer = SwitchFFN(16, 32, config=MoEConfig(n_experts=4, capacity_factor=1.0))
    x = torch.randn(3, 10, 16)
    keep = None
    if padded:
        keep = torch.ones(3, 10, dtype=torch.bool)
        keep[1, 6:] = False
        keep[2, 2:] = False
        layer.keep = keep
    layer(x)
    got = router_losses(layer.router_logits, layer.router_probs, layer.first_choices, layer.keep_used)
    g_got = torch.autograd.grad(got[0] + 0.3 * got[1], layer.router.weight, retain_graph=True)[0]
    want = load_balancing_loss(layer.router_logits, keep), router_z_loss(layer.router_logits, keep)
    g_want = torch.autograd.grad(want[0] + 0.3 * want[1], layer.router.weight)[0]
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[1], want[1])
    torch.testing.assert_close(g_got, g_want)
    assert g_want.abs().sum() > 0
