"""The trained-table paths of T5's bias (dense gather, per-distance Toeplitz expansion, per-distance score_mod, bucket
score_mod) against the plain gather ``table[bucket(j - i), h]``: the bias, its table gradient, the FlexAttention path
run eagerly on the CPU, and a GPT trained through each path, also rebuilt past its training context."""

from __future__ import annotations

import dataclasses
from collections import namedtuple

import pytest
import torch

from attnkit.attention import flex
from attnkit.errors import ConfigError
from attnkit.models.gpt import GPT, gpt_preset
from attnkit.models.transformer import AttentionConfig
from attnkit.positions.config import PositionConfig
from attnkit.positions.t5_bias import T5RelativeBias, relative_position_bucket, toeplitz, toeplitz_adjoint

PATHS = ["dense", "distance", "flex_band"]


def gather_reference(table: torch.Tensor, tq: int, tk: int, offset: int, bidirectional: bool) -> torch.Tensor:
    """``(1, H, Tq, Tk)``: table[bucket(j - (offset + i)), h], looked up cell by cell."""
    rel = torch.arange(tk)[None, :] - (offset + torch.arange(tq))[:, None]
    ids = relative_position_bucket(rel, bidirectional=bidirectional, n_buckets=table.shape[0], max_distance=20)
    return table[ids].permute(2, 0, 1)[None]


@pytest.mark.parametrize("tq,tk", [(5, 11), (7, 3), (1, 9), (6, 6)])
def test_toeplitz_and_its_adjoint_equal_the_index_gather(tq: int, tk: int) -> None:
    torch.manual_seed(tq * 10 + tk)
    d = torch.randn(3, tq + tk - 1, dtype=torch.float64, requires_grad=True)
    i, j = torch.arange(tq)[:, None], torch.arange(tk)[None, :]
    want = d[:, j - i + tq - 1][None]  # bias[h, i, j] = d[h, j - i + Tq - 1], by advanced indexing
    got = toeplitz(d, tq, tk)
    assert got.shape == (1, 3, tq, tk) and got.is_contiguous()
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    g = torch.randn(4, 3, tq, tk, dtype=torch.float64)  # a batch of upstream gradients, summed by the adjoint
    (g_want,) = torch.autograd.grad(want.expand(4, -1, -1, -1), d, g)
    (g_got,) = torch.autograd.grad(got.expand(4, -1, -1, -1), d, g)
    torch.testing.assert_close(g_got, g_want, atol=1e-12, rtol=0)
    torch.testing.assert_close(toeplitz_adjoint(g, tq, tk), g_want, atol=1e-12, rtol=0)


def test_toeplitz_casts_forward_and_returns_the_gradient_in_the_input_dtype() -> None:
    d = torch.randn(2, 8, requires_grad=True)
    b = toeplitz(d, 3, 6, torch.bfloat16)
    assert b.dtype == torch.bfloat16
    (g,) = torch.autograd.grad(b.float().sum(), d)
    assert g.dtype == torch.float32
    counts = torch.tensor([1, 2, 3, 3, 3, 3, 2, 1], dtype=torch.float32)  # cells on each diagonal of a 3 x 6 matrix
    torch.testing.assert_close(g, counts.expand(2, -1))
    with pytest.raises(ValueError, match="need 9"):
        toeplitz(d, 4, 6)


@pytest.mark.parametrize("path", ["distance", "flex_band"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("tq,tk,offset", [(5, 13, 8), (9, 9, 0), (4, 30, 26), (3, 40, 5)])
def test_distance_bias_and_table_gradient_equal_the_gather(path: str, causal: bool, tq: int, tk: int, offset: int) -> None:
    torch.manual_seed(offset + tq)
    mine = T5RelativeBias(4, n_buckets=8, max_distance=20, train_path=path).double()  # type: ignore[arg-type]
    torch.nn.init.normal_(mine.table.weight)
    q, k = torch.zeros(2, 4, tq, 8, dtype=torch.float64), torch.zeros(2, 4, tk, 8, dtype=torch.float64)
    got = mine.bias(q, k, torch.arange(offset, offset + tq), causal=causal, scale=1.0, q_offset=offset)
    want = gather_reference(mine.table.weight, tq, tk, offset, bidirectional=not causal)
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    g = torch.randn(2, 4, tq, tk, dtype=torch.float64)
    (g_got,) = torch.autograd.grad(got.expand(2, -1, -1, -1), mine.table.weight, g)
    (g_want,) = torch.autograd.grad(want.expand(2, -1, -1, -1), mine.table.weight, g)
    torch.testing.assert_close(g_got, g_want, atol=1e-11, rtol=0)


def test_the_bias_per_row_positions_keeps_the_gather() -> None:
    mine = T5RelativeBias(2, train_path="distance")
    q, k = torch.zeros(2, 2, 3, 4), torch.zeros(2, 2, 5, 4)
    pos = torch.tensor([[2, 3, 4], [0, 1, 2]])  # (B, Tq): no single offset
    got = mine.bias(q, k, pos, causal=True, scale=1.0)
    assert got.shape == (2, 2, 3, 5)
    torch.testing.assert_close(got[0:1], gather_reference(mine.table.weight, 3, 5, 2, False).detach().squeeze(0)[None])


Aux = namedtuple("Aux", "lse")  # FlexAttention's AuxOutput, as far as the band reads it


def flex_by_broadcast(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, block_mask=None, score_mod=None,  # type: ignore[no-untyped-def]
                      scale: float, enable_gqa: bool = False, return_aux=None, kernel_options=None):
    """FlexAttention's definition with autograd on the CPU (eager flex_attention has no CPU backward): the
    score_mod and the block mask's mask_mod evaluated on broadcast index tensors over the full score matrix;
    with ``return_aux``, also the log-sum-exp of each row (as ``aux.lse``); ``kernel_options`` (tiles) change nothing."""
    b, h, tq, tk = (torch.arange(n).view(*[-1 if a == i else 1 for a in range(4)]) for i, n in
                    enumerate((q.shape[0], q.shape[1], q.shape[2], k.shape[2])))
    s = score_mod(q @ k.transpose(-1, -2) * scale, b, h, tq, tk)
    if block_mask is not None:
        s = s.masked_fill(~block_mask.mask_mod(b, h, tq, tk), -float("inf"))
    out = s.softmax(-1) @ v
    return out if return_aux is None else (out, Aux(lse=torch.logsumexp(s, -1)))


@pytest.fixture
def eager_flex(monkeypatch: pytest.MonkeyPatch, flex_answers: list[bool]) -> list[bool]:
    """FlexAttention's path on the CPU: the hook's device check passes, :func:`flex_by_broadcast` stands in for
    compiled flex_attention; returns one entry per call of ``flex.positional``, True where it answered."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    monkeypatch.setattr(flex, "available", lambda q: True)
    monkeypatch.setattr(flex, "compiled", lambda autotune=False, name="": flex_by_broadcast)
    monkeypatch.setattr(flex, "MIN_QUERIES", 1)
    return flex_answers


def gpt_loss_and_grads(path: str, ids: torch.Tensor, compile: bool = False) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    position = PositionConfig(kind="t5_bias", n_buckets=8, max_distance=12, t5_train_path=path)  # type: ignore[arg-type]
    model = GPT(gpt_preset("gpt-tiny", d_model=32, attention=AttentionConfig(position=position))).double()
    fn = torch.compile(model, backend="aot_eager", fullgraph=True) if compile else model
    logits = fn(ids[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_a_gpt_trains_the_same_through_every_path(eager_flex: list[bool]) -> None:
    ids = torch.randint(0, 96, (2, 25), generator=torch.Generator().manual_seed(1))
    loss_ref, grads_ref = gpt_loss_and_grads("dense", ids)
    assert not any(eager_flex)  # the dense path builds the bias under autograd
    assert any("table" in n for n in grads_ref)
    for path in ("distance", "flex_band"):
        eager_flex.clear()
        loss, grads = gpt_loss_and_grads(path, ids)
        assert eager_flex and all(eager_flex) if path.startswith("flex") else not any(eager_flex)
        torch.testing.assert_close(loss, loss_ref, atol=1e-12, rtol=0)
        assert grads.keys() == grads_ref.keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, grads_ref[name], atol=1e-10, rtol=1e-8, msg=f"{path}: {name}")


def test_flex_band_traces_as_one_graph_with_the_model(eager_flex: list[bool]) -> None:
    """The whole GPT compiled (``fullgraph``: no break, as ``train.execution.compile`` runs it), its flex_band steps
    included: the same loss and gradients as the eager model's."""
    ids = torch.randint(0, 96, (2, 25), generator=torch.Generator().manual_seed(3))
    torch._dynamo.reset()
    loss_ref, grads_ref = gpt_loss_and_grads("flex_band", ids)
    loss, grads = gpt_loss_and_grads("flex_band", ids, compile=True)
    assert eager_flex and all(eager_flex)
    torch.testing.assert_close(loss, loss_ref, atol=1e-12, rtol=0)
    assert grads.keys() == grads_ref.keys() and any("table" in n for n in grads)
    for name, g in grads.items():
        torch.testing.assert_close(g, grads_ref[name], atol=1e-12, rtol=1e-10, msg=name)


def test_a_gpt_rebuilt_past_its_context_and_max_distance_agrees_on_every_path(eager_flex: list[bool]) -> None:
    """Trained at context 16 (max_distance 12), run at 61 tokens as the length-extrapolation benchmark rebuilds it:
    every training path's loss and gradients, and the evaluation logits (FlexAttention's bucket score_mod), equal
    the dense gather's."""
    torch.manual_seed(0)
    position = PositionConfig(kind="t5_bias", n_buckets=8, max_distance=12)
    short = GPT(gpt_preset("gpt-tiny", d_model=32, context=16, attention=AttentionConfig(position=position))).double()
    torch.nn.init.normal_(short.decoder.layers[0].self_attn.position.module.table.weight)  # a table with far biases
    ids = torch.randint(0, 96, (2, 62), generator=torch.Generator().manual_seed(2))

    def at(path: str) -> GPT:
        c = short.config
        attention = c.attention.replace(position=c.attention.position.replace(t5_train_path=path))
        longer = GPT(dataclasses.replace(c, context=61, attention=attention)).double()
        longer.load_state_dict(short.state_dict())
        return longer

    def loss_and_grads(model: GPT) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).logits.flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    dense = at("dense")
    loss_ref, grads_ref = loss_and_grads(dense)
    logits_ref = dense(ids[:, :-1]).logits.detach()  # under autograd: the dense path
    assert not any(eager_flex)
    for path in ("distance", "flex_band"):
        eager_flex.clear()
        loss, grads = loss_and_grads(at(path))
        assert eager_flex and all(eager_flex) if path.startswith("flex") else not any(eager_flex)
        torch.testing.assert_close(loss, loss_ref, atol=1e-12, rtol=0)
        for name, g in grads.items():
            torch.testing.assert_close(g, grads_ref[name], atol=1e-10, rtol=1e-8, msg=f"{path}: {name}")
    eager_flex.clear()
    with torch.no_grad():
        logits = at("distance")(ids[:, :-1]).logits
    assert eager_flex and all(eager_flex)  # evaluation: the band in FlexAttention
    torch.testing.assert_close(logits, logits_ref, atol=1e-10, rtol=0)


def test_a_score_mod_that_does_not_compile_warns_and_the_bias_path_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    """FlexAttention raising for a positional score_mod (Triton out of shared memory) in evaluation: one warning naming
    the error and the score_mod, then the kernel's bias path: the logits of the dense gather."""
    monkeypatch.setattr(flex, "available", lambda q: True)
    monkeypatch.setattr(flex, "MIN_QUERIES", 1)
    monkeypatch.setattr(flex, "_FAILED", {})
    calls: list[str] = []

    def no_kernel(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(kwargs["score_mod"].__name__)
        raise RuntimeError("No valid triton configs. OutOfMemoryError: out of resource: Required: 245760 Hardware limit:232448")

    monkeypatch.setattr(flex, "compiled", lambda autotune=False, name="": no_kernel)
    position = PositionConfig(kind="t5_bias", bidirectional=True)  # bidirectional buckets: the bucket score_mod
    model = GPT(gpt_preset("gpt-tiny", d_model=32, context=24, attention=AttentionConfig(position=position))).double().eval()
    torch.nn.init.normal_(model.decoder.layers[0].self_attn.position.module.table.weight)
    ids = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="'t5_bias' did not compile.*245760"):
        logits = model(ids).logits
    assert calls == ["mod"]  # tried once: the later layers skip it
    assert list(flex._FAILED) == ["the score_mod 't5_bias'"] and "245760" in flex._FAILED["the score_mod 't5_bias'"]
    monkeypatch.setattr(flex, "available", lambda q: False)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids).logits, atol=1e-12, rtol=0)


def test_an_unknown_path_names_the_key() -> None:
    with pytest.raises(ConfigError, match="t5_train_path"):
        gpt_preset("gpt-tiny").with_overrides(["attention.position.kind=t5_bias", "attention.position.t5_train_path=fused"])
    with pytest.raises(ValueError, match="train_path"):
        T5RelativeBias(2, train_path="fused")  # type: ignore[arg-type]


def test_a_band_kernel_that_does_not_compile_warns_and_trains_through_the_bias(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled kernel with the band raising (as Triton does where a card lacks the shared memory): one warning
    naming the error, then the same loss and gradients as the dense gather through the kernel's bias argument."""
    monkeypatch.setattr(flex, "available", lambda q: True)
    monkeypatch.setattr(flex, "MIN_QUERIES", 1)
    monkeypatch.setattr(flex, "_FAILED", {})

    def no_band(*args, return_aux=None, **kwargs):  # type: ignore[no-untyped-def]
        if return_aux is not None:
            raise RuntimeError("out of resource: shared memory, Required: 245760 Hardware limit: 232448")
        return flex_by_broadcast(*args, **kwargs)

    monkeypatch.setattr(flex, "compiled", lambda autotune=False, name="": no_band)
    ids = torch.randint(0, 96, (2, 25), generator=torch.Generator().manual_seed(1))
    loss_ref, grads_ref = gpt_loss_and_grads("dense", ids)
    with pytest.warns(RuntimeWarning, match="out of resource"):
        loss, grads = gpt_loss_and_grads("flex_band", ids)
    assert "245760" in flex._FAILED["the T5 band"]
    torch.testing.assert_close(loss, loss_ref, atol=1e-12, rtol=0)
    for name, g in grads.items():
        torch.testing.assert_close(g, grads_ref[name], atol=1e-10, rtol=1e-8, msg=name)


def test_causal_buckets_need_max_distance_past_their_exact_half() -> None:
    """Causal T5 buckets hold the exact offsets 0 .. n/2 - 1; a max_distance at or below n/2 would give bucket ids past
    the table (HF's formula, which these follow, indexes out of range there too)."""
    with pytest.raises(ConfigError, match="position.max_distance"):
        gpt_preset("gpt-tiny").with_overrides(["attention.position.kind=t5_bias", "attention.position.n_buckets=32",
                                               "attention.position.max_distance=12"])
    with pytest.raises(ValueError, match="max_distance=16"):
        T5RelativeBias(2, n_buckets=32, max_distance=16)
    T5RelativeBias(2, n_buckets=32, max_distance=12, bidirectional=True)  # an encoder's 8 exact buckets per side
    ids = relative_position_bucket(-torch.arange(2000), bidirectional=False, n_buckets=32, max_distance=17)
    assert int(ids.min()) == 0 and int(ids.max()) == 31  # just past n/2: every id in the table
