"""LoRA / DoRA layers against their equations computed by hand, merging, targets and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from attnkit.errors import ConfigError
from attnkit.models.bert import BertModel, bert_preset
from attnkit.models.gpt import GPT, gpt_preset
from attnkit.peft import LoRAConfig, apply_lora, merge, merge_and_unload, trainable_parameters, unmerge
from attnkit.peft.lora import LoRALinear, lora_layers


def _randomise(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(3)
    for layer in lora_layers(model).values():
        for p in layer.lora_B.values():
            p.data = torch.randn(p.shape, generator=g) * 0.2


def _bert() -> BertModel:
    torch.manual_seed(0)
    return BertModel(bert_preset("bert-test")).eval()


def test_slices_match_the_equation_by_hand() -> None:
    model = _bert()
    w0 = model.layers[0].self_attn.qkv_proj.weight.detach().clone()
    b0 = model.layers[0].self_attn.qkv_proj.bias.detach().clone()
    apply_lora(model, LoRAConfig(r=4, alpha=8, targets=("q", "v")))
    _randomise(model)
    layer = model.layers[0].self_attn.qkv_proj
    x = torch.randn(3, 5, 32)
    d = 32
    expected = x @ w0.T + b0
    for part, rows in (("q", slice(0, d)), ("v", slice(2 * d, 3 * d))):
        expected[..., rows] += (8 / 4) * x @ layer.lora_A[part].T @ layer.lora_B[part].T  # h += (alpha/r) B A x
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def _dense_reference(layer: LoRALinear, parts: dict[str, slice]) -> tuple[nn.Linear, dict[str, Tensor]]:
    """Independent leaf copies of ``A`` and ``B``, and the frozen layer, for ``x (W_0 + s B A)^T + b`` built row block by row block."""
    ab = {f"{k}{n}": getattr(layer, f"lora_{k}")[n].detach().clone().requires_grad_() for n in parts for k in "AB"}
    return layer.base, ab


def _dense_forward(x: Tensor, base: nn.Linear, ab: dict[str, Tensor], parts: dict[str, slice], s: float) -> Tensor:
    rows = []
    for i in range(base.out_features):  # the update's rows, zero where no slice adapts (Hu et al. eq. 3 per slice)
        hit = [n for n, r in parts.items() if r.start <= i < r.stop]
        rows.append(s * (ab[f"B{hit[0]}"][i - parts[hit[0]].start] @ ab[f"A{hit[0]}"]) if hit else torch.zeros(base.in_features))
    w = base.weight.detach() + torch.stack(rows)  # (d_out, d_in)
    return x @ w.T + base.bias.detach()


def test_fused_slices_forward_and_gradients_match_the_dense_update() -> None:
    """q and v slices with k's rows between them left alone: output and every gradient against the dense
    weight ``W_0 + s B A`` built row by row, in training mode (dropout 0)."""
    torch.manual_seed(0)
    parts = {"q": slice(0, 16), "v": slice(32, 48)}
    layer = LoRALinear(nn.Linear(16, 48), [(n, r.start, r.stop) for n, r in parts.items()], LoRAConfig(r=2, alpha=6)).train()
    with torch.no_grad():
        for p in layer.lora_B.values():
            p.normal_()
    base, ab = _dense_reference(layer, parts)
    x = torch.randn(3, 5, 16, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    out, ref = layer(x), _dense_forward(xr, base, ab, parts, 3.0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-5, rtol=1e-5)
    for n in parts:
        torch.testing.assert_close(layer.lora_A[n].grad, ab[f"A{n}"].grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(layer.lora_B[n].grad, ab[f"B{n}"].grad, atol=1e-5, rtol=1e-5)
    assert base.weight.grad is None and base.bias.grad is None
    dense = _dense_forward(torch.eye(16), base, ab, parts, 3.0) - base.bias.detach()  # rows of W', as columns
    torch.testing.assert_close(layer.scaling * layer.placed_B() @ layer.stacked_A(), (dense.T - base.weight).detach(),
                               atol=1e-5, rtol=1e-5)


def test_under_bf16_autocast_the_output_matches_the_dense_update() -> None:
    torch.manual_seed(0)
    parts = {"q": slice(0, 16), "k": slice(16, 32), "v": slice(32, 48)}
    layer = LoRALinear(nn.Linear(16, 48), [(n, r.start, r.stop) for n, r in parts.items()], LoRAConfig(r=2, alpha=6))
    with torch.no_grad():
        for p in layer.lora_B.values():
            p.normal_()
    base, ab = _dense_reference(layer, parts)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), _dense_forward(x, base, ab, parts, 3.0).detach(), atol=0.1, rtol=0.02)


class _Ops(TorchDispatchMode):
    """The ATen ops run inside, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("autocast", [False, True])
def test_adapter_matmuls_do_not_grow_with_the_slices_and_copy_no_output(autocast: bool) -> None:
    """A training step of a fused Q/K/V layer: the matmuls of one slice and of three are the same
    (forward x A^T and h B^T added into the base product; backward two for B, two for A and x), and no
    op copies the output or writes into a slice of it (an in-place add into a slice clones its gradient)."""
    counts = {}
    for parts in ([("q", 0, 16)], [("q", 0, 16), ("k", 16, 32), ("v", 32, 48)]):
        layer = LoRALinear(nn.Linear(16, 48), parts, LoRAConfig(r=2, alpha=4, dropout=0.1)).train()
        x = torch.randn(2, 3, 16, requires_grad=True)
        with _Ops() as seen:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                out = layer(x)
            out.float().sum().backward()
        counts[len(parts)] = sum(op in ("mm", "addmm", "bmm", "linear", "matmul") for op in seen.ops)
        assert not {"clone", "copy_", "slice_backward", "as_strided_scatter", "slice_scatter", "index_put_"} & set(seen.ops)
    plain = nn.Linear(16, 48)
    with _Ops() as seen:
        plain(torch.randn(2, 3, 16, requires_grad=True)).sum().backward()
    assert counts[1] == counts[3] == sum(op in ("mm", "addmm") for op in seen.ops) + 5  # base: forward, input gradient


def test_rslora_and_dora_equations() -> None:
    lin = nn.Linear(16, 12)
    x = torch.randn(4, 16)
    rs = LoRALinear(nn.Linear(16, 12), [("all", 0, 12)], LoRAConfig(r=4, alpha=8, rslora=True))
    assert rs.scaling == pytest.approx(8 / math.sqrt(4))
    dora = LoRALinear(lin, [("all", 0, 12)], LoRAConfig(r=4, alpha=8, dora=True))
    torch.testing.assert_close(dora.magnitude["all"], lin.weight.norm(dim=1))  # m = ||W_0||_c at the start
    with torch.no_grad():
        dora.lora_B["all"].normal_()
        dora.magnitude["all"].mul_(1.5)
    w = lin.weight + 2 * dora.lora_B["all"] @ dora.lora_A["all"]
    expected = x @ (dora.magnitude["all"][:, None] * w / w.norm(dim=1, keepdim=True)).T + lin.bias  # Liu et al. eq. 5
    torch.testing.assert_close(dora(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dora", [False, True])
def test_merge_unmerge_exact(dora: bool) -> None:
    model = _bert()
    apply_lora(model, LoRAConfig(r=4, targets=("q", "v", "w1", "out_proj"), dora=dora))
    _randomise(model)
    x = torch.randint(0, 99, (2, 7))
    out = model(x).last_hidden
    merge(model)
    assert (model(x).last_hidden - out).abs().max() < 1e-6
    unmerge(model)
    assert (model(x).last_hidden - out).abs().max() < 1e-6
    plain = merge_and_unload(model)
    assert not lora_layers(plain)
    assert (plain(x).last_hidden - out).abs().max() < 1e-6


def test_frozen_base_gets_no_weight_gradient_and_counts() -> None:
    model = _bert()
    total = sum(p.numel() for p in model.parameters())
    apply_lora(model, LoRAConfig(r=2, targets=("q", "v")))
    model(torch.randint(0, 99, (2, 5))).last_hidden.sum().backward()
    layer = model.layers[0].self_attn.qkv_proj
    assert layer.base.weight.grad is None and layer.lora_A["q"].grad is not None
    count = trainable_parameters(model)
    assert count.trainable == 2 * 2 * (2 * 32 + 32 * 2)  # 2 layers x (q, v) x (A + B)
    assert count.total == total + count.trainable
    assert f"{count.percent:.3f}%" in str(count)


def test_grouped_query_slices() -> None:
    torch.manual_seed(0)
    model = GPT(gpt_preset("llama-tiny")).eval()
    apply_lora(model, LoRAConfig(r=2, targets=("k", "v")))
    layer = model.decoder.layers[0].self_attn.qkv_proj
    hd = 64 // 4
    assert [(n, a, b) for n, a, b in layer.parts] == [("k", 4 * hd, 6 * hd), ("v", 6 * hd, 8 * hd)]


def test_cross_attention_and_ffn_targets() -> None:
    from attnkit.models.transformer import Transformer, preset

    model = Transformer(preset("transformer-tiny"))
    apply_lora(model, LoRAConfig(r=2, targets=("cross_attn.q_proj", "cross_attn.k_proj", "ffn.w2")))
    names = set(lora_layers(model))
    assert any(n.endswith("cross_attn.kv_proj") for n in names) and any(n.endswith("cross_attn.q_proj") for n in names)
    assert any(n.endswith("ffn.w2") for n in names)


def test_every_pattern_must_match() -> None:
    with pytest.raises(ConfigError, match=r"'qurey' matches no layer; layer names end in: .*q_proj") as e:
        apply_lora(_bert(), LoRAConfig(targets=("q", "qurey")))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="both whole and by slices"):
        apply_lora(_bert(), LoRAConfig(targets=("q", "qkv")))


def test_prompt_initialised_from_a_text_takes_its_token_embeddings() -> None:
    from attnkit.peft import PromptConfig, apply_prompt

    model = _bert()
    table = model.embed.tokens.weight.detach().clone()
    apply_prompt(model, PromptConfig(n_virtual=5, init="text", init_text="x"), init_ids=[7, 3])
    torch.testing.assert_close(model.prompt_encoder.encoder.embedding, table[[7, 3, 7, 3, 7]])  # repeated to n
