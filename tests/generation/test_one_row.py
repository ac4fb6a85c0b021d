"""``use_one_row_linears``: compiled one-row products equal ``F.linear``; everything else is untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounter

from attnkit.generation import OneRowLinear, use_one_row_linears
from attnkit.generation.sampling import SamplingConfig, decode_greedy_token, decode_one_token, generate, prefill, static_caches
from attnkit.models.gpt import GPT, gpt_preset


def test_transform_keeps_weights_names_and_ties():
    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny")).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = use_one_row_linears(model)
    assert n == sum(1 for m in model.modules() if isinstance(m, nn.Linear)) > 0
    assert all(type(m) is OneRowLinear for m in model.modules() if isinstance(m, nn.Linear))
    assert model.lm_head.weight is model.tok_embed.weight
    assert model.state_dict().keys() == before.keys()
    assert use_one_row_linears(model) == 0  # idempotent


def test_eager_calls_are_f_linear_exactly():
    torch.manual_seed(0)
    ref = nn.Linear(16, 24)
    lin = nn.Linear(16, 24)
    lin.load_state_dict(ref.state_dict())
    use_one_row_linears(lin)
    for shape in [(1, 16), (1, 1, 16), (7, 3, 16)]:
        x = torch.randn(shape)
        assert torch.equal(lin(x), ref(x))


def test_compiled_one_row_equals_linear_and_many_rows_fall_back():
    torch.manual_seed(0)
    ref = nn.Linear(32, 40)
    lin = nn.Linear(32, 40)
    lin.load_state_dict(ref.state_dict())
    use_one_row_linears(lin)
    traced: list[str] = []

    def backend(gm, inputs):  # record which path the graph took, then run it as traced
        traced.append(" ".join(str(n.target) for n in gm.graph.nodes))
        return gm.forward

    f = torch.compile(lambda x: lin(x), backend=backend, dynamic=False)
    for shape, one_row in [((1, 1, 32), True), ((2, 32), True), ((9, 32), False)]:
        x = torch.randn(shape)
        torch.testing.assert_close(f(x), ref(x), atol=1e-5, rtol=1e-5)
        assert ("linear" not in traced[-1]) == one_row, traced[-1]
    torch._dynamo.reset()


def tiny_gpt_and_eager_tokens() -> tuple[GPT, list[list[int]], torch.Tensor, torch.Tensor]:
    """A random gpt-tiny, the tokens eager decoding gives for two prompts (6 greedy tokens), and
    the prompts left-padded as ``prefill`` takes them (ids, pad counts)."""
    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny")).eval()
    eager = generate(model, [[5, 6, 7, 8], [9, 10]], SamplingConfig(max_new_tokens=6, temperature=0)).tokens
    return model, eager, torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]]), torch.tensor([0, 2])


def test_compiled_greedy_decoding_with_one_row_linears_matches_eager():
    """The whole decode step traced with the transform (aot_eager runs the traced graph) gives
    the tokens of eager decoding; the greedy step's argmax equals argmax of the logits step."""
    model, eager, ids, pad = tiny_gpt_and_eager_tokens()
    assert use_one_row_linears(model) > 0
    counter = CompileCounter()
    torch._dynamo.reset()
    step = torch.compile(decode_greedy_token, backend="aot_eager", fullgraph=True)
    caches = static_caches(model, 2, 16)
    with torch.no_grad():
        token = prefill(model, ids, pad, caches).argmax(-1, keepdim=True)
        got = [token[:, 0].tolist()]
        for i in range(5):
            slot = torch.tensor([4 + i])
            logits = torch.compile(decode_one_token, backend=counter, fullgraph=True)(model, token, slot, pad, caches).clone()
            nxt = step(model, token, slot, pad, caches)  # writes the same cache slot again: same values
            assert torch.equal(nxt[:, 0], logits.argmax(-1))
            token = nxt
            got.append(token[:, 0].tolist())
    assert [list(r) for r in zip(*got)] == eager
    torch._dynamo.reset()


def test_decode_step_bias_equals_boolean_mask(monkeypatch):
    """The decode step's 0 / -inf bias (scaled_dot) gives the logits of the boolean-mask path."""
    from attnkit.attention.scaled_dot import ScaledDotProduct

    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny")).eval()
    assert model.decoder.layers[0].self_attn.kernel.bias_as_mask
    ids = torch.tensor([[5, 6, 7, 8], [0, 0, 9, 10]])
    pad = torch.tensor([0, 2])
    out = {}
    for as_bias in (True, False):
        monkeypatch.setattr(ScaledDotProduct, "bias_as_mask", as_bias)
        caches = static_caches(model, 2, 16)
        with torch.no_grad():
            token = prefill(model, ids, pad, caches).argmax(-1, keepdim=True)
            out[as_bias] = decode_one_token(model, token, torch.tensor([4]), pad, caches)
    torch.testing.assert_close(out[True], out[False], atol=1e-5, rtol=1e-5)


def test_greedy_blocks_give_the_tokens_of_single_steps(monkeypatch):
    """``generate(compile=..., block=n)``: n greedy steps per call, then single steps for the
    rest, give the tokens of eager one-step decoding (the compiled functions swapped for the
    plain ones, which is what they trace)."""
    import attnkit.generation.sampling as S

    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny")).eval()
    prompts = [[5, 6, 7, 8], [9, 10]]
    cfg = SamplingConfig(max_new_tokens=12, temperature=0)
    eager = generate(model, prompts, cfg).tokens
    monkeypatch.setattr(S, "compiled_decode_one_token", lambda mode, greedy=False: decode_greedy_token if greedy else decode_one_token)
    calls = []

    def block_fn(*args):
        calls.append(args[2].shape[0])
        return S.decode_greedy_block(*args)

    monkeypatch.setattr(S, "compiled_decode_greedy_block", lambda mode: block_fn)
    for block in (5, 1, 20):
        calls.clear()
        assert generate(model, prompts, cfg, compile=True, block=block).tokens == eager
        assert calls == ([5, 5] if block == 5 else [])  # 11 tokens after the first: 2 blocks, 1 single step
    with pytest.raises(ValueError, match="block"):
        generate(model, prompts, cfg, block=0)


def test_folded_norms_keep_eager_outputs_state_and_ties():
    """fold_norms hands each pre-norm LayerNorm to the product after it: eager logits are
    bit-identical, the state dict and tied weights are untouched, a deepcopy stays folded."""
    import copy

    from attnkit.generation import FoldedLayerNorm

    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny")).eval()
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        ref = model(ids).logits
    keys = model.state_dict().keys()
    use_one_row_linears(model, fold_norms=True)
    folded = [m for m in model.modules() if isinstance(m, FoldedLayerNorm)]
    assert len(folded) == 2 * model.config.n_layers  # attention and feed-forward norm of every layer
    assert type(model.decoder.norm) is nn.LayerNorm  # the final norm's output leaves the model: kept
    assert model.decoder.layers[0].self_attn.qkv_proj.folded_norm is model.decoder.layers[0].res_attn.norm
    assert model.state_dict().keys() == keys and model.lm_head.weight is model.tok_embed.weight
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref)
        twin = copy.deepcopy(model)
        layer = twin.decoder.layers[1]
        assert layer.ffn.w1.folded_norm is layer.res_ffn.norm
        assert torch.equal(twin(ids).logits, ref)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)])
def test_compiled_one_row_folded_norm_equals_layer_norm_then_linear(dtype, tol):
    """The traced one-row path (norm statistics computed per output) against LayerNorm -> Linear,
    with a non-trivial norm affine; more rows than MAX_ROWS take F.layer_norm + F.linear."""
    from attnkit.generation.one_row import FoldedLayerNorm, OneRowLinear

    torch.manual_seed(0)
    norm, ref = nn.LayerNorm(48), nn.Linear(48, 20)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.3)
        norm.bias.normal_(0.0, 0.3)
    norm, ref = norm.to(dtype), ref.to(dtype)
    lin = OneRowLinear(48, 20).to(dtype)
    lin.load_state_dict(ref.state_dict())
    object.__setattr__(lin, "folded_norm", norm)
    passthrough = FoldedLayerNorm(48)
    torch._dynamo.reset()
    f = torch.compile(lambda x: lin(passthrough(x)), backend="aot_eager", dynamic=False)
    for shape in [(1, 1, 48), (2, 1, 48), (6, 48)]:
        x = (torch.randn(shape) * 3 + 1).to(dtype)
        with torch.no_grad():
            torch.testing.assert_close(f(x), ref(norm(x)), atol=tol, rtol=tol)
    torch._dynamo.reset()


def test_compiled_greedy_decoding_with_folded_norms_matches_eager():
    """The traced one-row step with folded norms against the eager step of the model as built
    (a copy taken before the transform), logits and tokens."""
    import copy

    model, eager, ids, pad = tiny_gpt_and_eager_tokens()
    built = copy.deepcopy(model)
    use_one_row_linears(model, fold_norms=True)
    torch._dynamo.reset()
    step = torch.compile(decode_one_token, backend="aot_eager", fullgraph=True)
    caches, ref_caches = static_caches(model, 2, 16), static_caches(built, 2, 16)
    with torch.no_grad():
        token = prefill(model, ids, pad, caches).argmax(-1, keepdim=True)
        prefill(built, ids, pad, ref_caches)
        got = [token[:, 0].tolist()]
        for i in range(5):
            slot = torch.tensor([4 + i])
            logits = step(model, token, slot, pad, caches)
            torch.testing.assert_close(logits, decode_one_token(built, token, slot, pad, ref_caches), atol=1e-4, rtol=1e-4)
            token = logits.argmax(-1, keepdim=True)
            got.append(token[:, 0].tolist())
    assert [list(r) for r in zip(*got)] == eager
    torch._dynamo.reset()
