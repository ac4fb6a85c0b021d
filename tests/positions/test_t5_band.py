"""T5's causal band (:mod:`attnkit.positions.t5_band`): the band values against the bucket gather, and the band's
gradient against autograd through a dense attention with the bias ``table[bucket(j - i), h]`` built cell by cell."""

from __future__ import annotations

import pytest
import torch

from attnkit.positions.base import repeat_kv
from attnkit.positions.t5_band import band_gradient, with_band_gradient
from attnkit.positions.t5_bias import T5RelativeBias, relative_position_bucket


def dense_attention(q, k, v, bias, scale, key_keep=None):  # type: ignore[no-untyped-def]
    """softmax(scale q k^T + bias) v, causal (and key padding), with its log-sum-exp; rows without keys give 0."""
    t = q.shape[-2]
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    s = q @ repeat_kv(k, q.shape[1]).transpose(-1, -2) * scale + bias
    keep = (j <= i)[None, None] if key_keep is None else (j <= i)[None, None] & key_keep[:, None, None, :]
    s = s.masked_fill(~keep, -float("inf"))
    return torch.softmax(s, -1).nan_to_num(0.0) @ repeat_kv(v, q.shape[1]), torch.logsumexp(s, -1)


@pytest.mark.parametrize("b,h,g,t,d,padding", [(2, 4, 2, 37, 5, False), (1, 2, 2, 10, 10, True), (2, 2, 1, 23, 4, True),
                                               (1, 1, 1, 3, 7, False), (2, 3, 3, 64, 16, False), (1, 2, 1, 70, 17, True),
                                               (1, 2, 2, 50, 32, False), (2, 1, 1, 9, 0, False)])
def test_the_band_gradient_equals_autograd_through_the_dense_bias(b: int, h: int, g: int, t: int, d: int, padding: bool) -> None:
    torch.manual_seed(t * 7 + d)
    q, k, v = torch.randn(b, h, t, 8).double(), torch.randn(b, g, t, 8).double(), torch.randn(b, g, t, 6).double()
    e = torch.randn(h, d + 1, dtype=torch.float64, requires_grad=True)
    i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
    key_keep = torch.rand(b, t, generator=torch.Generator().manual_seed(t)) > 0.3 if padding else None
    out, lse = dense_attention(q, k, v, e[:, (i - j).clamp(0, d)], 0.3, key_keep)
    grad_out = torch.randn_like(out)
    (want,) = torch.autograd.grad(out, e, grad_out)
    got = band_gradient(q, k, v, out.detach(), lse, grad_out, 0.3, e.detach(), key_keep)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    assert want[:, d].abs().sum() > 1e-9 or t <= d or d == 0  # the far value's gradient, from the band alone


def test_with_band_gradient_passes_the_output_gradient_and_adds_the_band_s() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 20, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    e = torch.randn(2, 7, dtype=torch.float64, requires_grad=True)
    i, j = torch.arange(20)[:, None], torch.arange(20)[None, :]
    want, _ = dense_attention(q, k, v, e[:, (i - j).clamp(0, 6)], 0.5)
    with torch.no_grad():
        _, lse = dense_attention(q, k, v, e[:, (i - j).clamp(0, 6)], 0.5)
    # the kernel's stand-in: the same attention with e read without autograd
    out, _ = dense_attention(q, k, v, e.detach()[:, (i - j).clamp(0, 6)], 0.5)
    got = with_band_gradient(out, lse, e, q, k, v, 0.5)
    grad = torch.randn_like(want)
    g_want = torch.autograd.grad(want, (q, k, v, e), grad)
    g_got = torch.autograd.grad(got, (q, k, v, e), grad)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("n_buckets,max_distance", [(32, 128), (8, 12), (16, 40)])
def test_the_band_values_are_the_causal_bucket_gather_up_to_the_last_bucket(n_buckets: int, max_distance: int) -> None:
    mod = T5RelativeBias(3, n_buckets, max_distance, train_path="flex_band")
    e = mod.band_values()
    dist = torch.arange(3 * max_distance)
    ids = relative_position_bucket(-dist, bidirectional=False, n_buckets=n_buckets, max_distance=max_distance)
    d = e.shape[-1] - 1
    assert int(ids[d]) == n_buckets - 1 and int(ids[d - 1]) < n_buckets - 1  # D: the first distance of the last bucket
    torch.testing.assert_close(e[:, dist.clamp(max=d)], mod.table.weight[ids].t(), atol=0, rtol=0)


def test_flex_band_leaves_every_call_but_causal_self_attention_to_the_kernel_bias() -> None:
    mod = T5RelativeBias(2, train_path="flex_band")
    assert getattr(mod.flex_score_mod(0, 16, 16, causal=True), "band_values", None) is not None
    assert mod.flex_score_mod(0, 16, 16, causal=False) is None  # bidirectional buckets
    assert mod.flex_score_mod(4, 16, 20, causal=True) is None  # queries after a cache
    with torch.no_grad():  # evaluation: the band for causal self-attention, the bucket score_mod elsewhere
        assert getattr(mod.flex_score_mod(0, 16, 16, causal=True), "band_values", None) is not None
        assert getattr(mod.flex_score_mod(4, 16, 20, causal=True), "band_values", "none") == "none"
        assert getattr(mod.flex_score_mod(0, 16, 16, causal=False), "band_values", "none") == "none"


@pytest.mark.parametrize("train_path", ["dense", "distance", "flex_band"])
def test_the_evaluation_band_gives_every_score_the_bucket_formulas_bias(train_path: str) -> None:
    """Without autograd, causal self-attention reads the band on every train path; each (query, key) cell of the
    causal triangle gets what T5's bucket formula over the table gives (the bucket score_mod, evaluated eagerly)."""
    mod = T5RelativeBias(3, n_buckets=16, max_distance=40, train_path=train_path)  # type: ignore[arg-type]
    torch.nn.init.normal_(mod.table.weight)
    t = 150
    with torch.no_grad():
        band = mod.flex_score_mod(0, t, t, causal=True)
        buckets = mod.score_mod(0, causal=True)
    assert band is not None and buckets is not None and not band.band_values.requires_grad
    i, j = torch.tril_indices(t, t)
    zero, b = torch.zeros(i.numel(), dtype=torch.float64), torch.zeros_like(i)
    for h in range(3):
        hh = torch.full_like(i, h)
        torch.testing.assert_close(band(zero, b, hh, i, j).double(), buckets(zero, b, hh, i, j).double(), atol=0, rtol=0)


@pytest.mark.gpu
def test_flex_band_in_compiled_flexattention_matches_the_dense_path_on_cuda(flex_answers: list[bool]) -> None:
    """A GPT with T5's bias (evaluation mode: no dropout) run forward and backward through compiled FlexAttention
    (``flex_band``) and through the dense gather: the same loss and gradients (float32)."""
    from attnkit.models.gpt import GPT, gpt_preset
    from attnkit.models.transformer import AttentionConfig
    from attnkit.positions.config import PositionConfig

    answered = flex_answers
    ids = torch.randint(0, 96, (2, 257), generator=torch.Generator().manual_seed(0)).cuda()
    results = {}
    for path in ("dense", "flex_band"):
        torch.manual_seed(0)
        position = PositionConfig(kind="t5_bias", t5_train_path=path)  # type: ignore[arg-type]
        model = GPT(gpt_preset("gpt-tiny", d_model=64, n_heads=4, context=256, attention=AttentionConfig(position=position))).cuda().eval()
        torch.nn.init.normal_(model.decoder.layers[0].self_attn.position.module.table.weight)
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        results[path] = (loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        assert (answered and all(answered)) if path == "flex_band" else not any(answered)
        answered.clear()
    torch.testing.assert_close(results["flex_band"][0], results["dense"][0], atol=1e-4, rtol=1e-4)
    for name, g in results["dense"][1].items():
        torch.testing.assert_close(results["flex_band"][1][name], g, atol=2e-4, rtol=2e-3, msg=name)


@pytest.mark.gpu
def test_evaluation_of_the_length_extrapolation_gpt_compiles_on_cuda(flex_answers: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``length-extrapolation-t5-bias`` model's shape (6 layers, 6 heads of 64, context 256) evaluated under bf16
    autocast: FlexAttention answers every layer (its bucket score_mod over the float32 table did not compile there:
    245,760 bytes of shared memory asked) and the logits match the dense gather's."""
    from attnkit.attention import flex
    from attnkit.models.gpt import GPT, gpt_preset
    from attnkit.models.transformer import AttentionConfig
    from attnkit.positions.config import PositionConfig

    model = GPT(gpt_preset("gpt-tiny", vocab_size=96, n_layers=6, d_model=384, n_heads=6, context=256,
                           attention=AttentionConfig(position=PositionConfig(kind="t5_bias")))).cuda().eval()
    ids = torch.randint(0, 96, (4, 256), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(ids).logits.float()
    assert len(flex_answers) == 6 and all(flex_answers)
    monkeypatch.setattr(flex, "available", lambda q: False)  # the dense gather through the kernel's bias argument
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        reference = model(ids).logits.float()
    torch.testing.assert_close(logits, reference, atol=5e-2, rtol=5e-2)


def test_the_lookup_is_the_embeddings_without_its_backward() -> None:
    """``lookup``: nn.Embedding's rows and table gradient, exactly, through a backward without ``EmbeddingBackward``
    (whose CUDA kernel reads a count back to the host in every layer of a training step)."""
    mod = T5RelativeBias(4, n_buckets=16, max_distance=40).double()
    torch.nn.init.normal_(mod.table.weight)
    ids = torch.randint(0, 16, (300,), generator=torch.Generator().manual_seed(0))
    grad = torch.randn(300, 4, dtype=torch.float64)
    got = mod.lookup(ids)
    (g_got,) = torch.autograd.grad(got, mod.table.weight, grad)
    want = mod.table(ids)
    (g_want,) = torch.autograd.grad(want, mod.table.weight, grad)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(g_got, g_want, atol=1e-13, rtol=0)
    names, todo = set(), [mod.band_values().grad_fn, mod.distance_values(0, 9, 9, True).grad_fn]
    while todo:
        fn = todo.pop()
        if fn is not None:
            names.add(type(fn).__name__)
            todo += [f for f, _ in fn.next_functions]
    assert names and not any("Embedding" in n for n in names)
