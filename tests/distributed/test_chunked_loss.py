"""The chunked output layer and cross-entropy: the loss and every gradient of the plain
``F.cross_entropy`` over full logits (float64, float32, bf16 autocast), with padding and label
smoothing, through a GPT with tied or untied embeddings and with activation checkpointing; no
logits kept for the backward pass; reuse of the loss and second backward passes as autograd's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnkit.cli.main import main
from attnkit.data.lm import LMTask
from attnkit.errors import ConfigError
from attnkit.models.gpt import GPT, gpt_preset
from attnkit.objectives.chunked_ce import chunked_cross_entropy, head_loss
from attnkit.training.config import ExecutionConfig
from attnkit.training.distributed import apply_activation_checkpointing

V = 97


def _inputs(bias: bool, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(3, 11, 16, generator=g, dtype=dtype) / 4).requires_grad_()  # logits of about unit scale: a loss near log V
    w = torch.randn(V, 16, generator=g, dtype=dtype, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=dtype, requires_grad=True) if bias else None
    y = torch.randint(0, V, (3, 11), generator=g)
    y[0, :4] = -100  # padding
    y[2, -1] = -100
    return h, w, b, y


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("chunk", [1, 5, 8, 33, 1000])
@pytest.mark.parametrize("smoothing,bias", [(0.0, False), (0.1, True), (0.3, False)])
def test_loss_and_gradients_equal_the_plain_cross_entropy(chunk, smoothing, bias, dtype, tol):
    h, w, b, y = _inputs(bias, dtype)
    want = F.cross_entropy(F.linear(h, w, b).flatten(0, 1), y.flatten(), ignore_index=-100, label_smoothing=smoothing)
    params = [h, w] + ([b] if bias else [])
    grads_want = torch.autograd.grad(want, params)
    got, n = chunked_cross_entropy(h, w, y, bias=b, chunk=chunk, label_smoothing=smoothing)
    grads_got = torch.autograd.grad(got, params)
    assert int(n) == int((y != -100).sum()) == 28
    assert got.dtype == dtype and torch.allclose(got, want, atol=tol, rtol=0)
    for a, e in zip(grads_got, grads_want):
        assert a.dtype == dtype and torch.allclose(a, e, atol=tol, rtol=tol)
    assert grads_got[0][0, :4].abs().max() == 0  # ignored targets: no gradient into their hidden states


@pytest.mark.parametrize("smoothing,bias", [(0.0, False), (0.1, True)])
def test_bf16_autocast_matches_the_autocast_linear_and_float32_loss(smoothing, bias):
    h, w, b, y = _inputs(bias)
    params = [h, w] + ([b] if bias else [])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.cross_entropy(F.linear(h, w, b).flatten(0, 1).float(), y.flatten(), label_smoothing=smoothing)
        got, _ = chunked_cross_entropy(h, w, y, bias=b, chunk=7, label_smoothing=smoothing)
    exact = F.cross_entropy(F.linear(h, w, b).flatten(0, 1), y.flatten(), label_smoothing=smoothing)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=2e-3, rtol=0)
    assert (got - exact).abs() > 1e-6  # the products did run in bf16, as F.linear's under autocast
    for a, e in zip(torch.autograd.grad(got, params), torch.autograd.grad(want, params)):
        assert a.dtype == torch.float32  # the dtypes of h, W and b
        assert (a - e).norm() <= 1e-2 * e.norm()


def test_partial_gradients_no_grad_and_no_counted_target():
    h, w, b, y = _inputs(True)
    w.requires_grad_(False)  # a frozen head: only h and b get gradients
    want = F.cross_entropy(F.linear(h, w, b).flatten(0, 1), y.flatten())
    got, _ = chunked_cross_entropy(h, w, y, bias=b, chunk=6)
    got.backward()
    assert w.grad is None
    for p, e in zip((h, b), torch.autograd.grad(want, (h, b))):
        assert torch.allclose(p.grad, e, atol=1e-6, rtol=1e-6)
    with torch.no_grad():
        loss, _ = chunked_cross_entropy(h, w, y, bias=b, chunk=6)
    assert loss.grad_fn is None and torch.allclose(loss, want, atol=1e-6, rtol=0)
    none = torch.full_like(y, -100)  # nothing counts: NaN loss and zero gradients, as F.cross_entropy
    h.grad = None
    loss, n = chunked_cross_entropy(h, w, none, chunk=6)
    loss.backward()
    assert int(n) == 0 and loss.isnan() and F.cross_entropy(F.linear(h, w).flatten(0, 1), none.flatten()).isnan()
    assert h.grad.abs().max() == 0


def test_reused_loss_and_second_backward_behave_as_autograd():
    h, w, _, y = _inputs(False)
    want = torch.autograd.grad(F.cross_entropy(F.linear(h, w).flatten(0, 1), y.flatten()), (h, w))
    loss, _ = chunked_cross_entropy(h, w, y, chunk=8)
    (loss + 2 * loss).backward(retain_graph=True)  # used twice: the incoming gradients add
    assert torch.allclose(h.grad, 3 * want[0], atol=1e-6) and torch.allclose(w.grad, 3 * want[1], atol=1e-6)
    loss.backward()  # the graph was retained: a second backward adds the same gradients again
    assert torch.allclose(h.grad, 4 * want[0], atol=1e-6) and torch.allclose(w.grad, 4 * want[1], atol=1e-6)
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()  # freed by the backward without retain_graph
    loss, _ = chunked_cross_entropy(h, w, y, chunk=8)
    (gh,) = torch.autograd.grad(loss, h, create_graph=True)
    with pytest.raises(RuntimeError):
        gh.sum().backward()  # no second derivatives


def test_no_full_logits_are_kept_for_the_backward_pass():
    h, w, _, y = _inputs(False)
    saved: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        F.cross_entropy(F.linear(h, w).flatten(0, 1), y.flatten()).backward()
    assert max(saved) >= 33 * V  # the plain loss keeps (N, V) logits
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked_cross_entropy(h, w, y, chunk=20)[0].backward()
    assert max(saved) == w.numel() < 20 * V  # the gradients of h and W, computed in the forward pass: no logits


@pytest.mark.parametrize("tie,checkpointing", [(True, False), (True, True), (False, True)])
def test_gpt_lm_task_chunked_equals_plain(tie, checkpointing):
    cfg = gpt_preset("char-shakespeare", n_layers=2, d_model=32, n_heads=4, vocab_size=V, context=16, dropout=0.0,
                     tie_embeddings=tie)
    cfg = cfg.replace(attention=cfg.attention.replace(dropout=0.0))
    torch.manual_seed(0)
    plain = GPT(cfg)
    chunked = GPT(cfg)
    chunked.load_state_dict(plain.state_dict())
    if checkpointing:
        apply_activation_checkpointing(chunked)
    tokens = torch.randint(0, V, (400,), generator=torch.Generator().manual_seed(1))
    batch = next(LMTask(tokens, tokens, context=16, batch_size=3).batches(0, 0))  # (3, 17)
    a, na = LMTask(tokens, tokens, context=16, batch_size=3).loss(plain, batch)
    b, nb = LMTask(tokens, tokens, context=16, batch_size=3, loss_chunk=7).loss(chunked, batch)
    assert na == nb == 48 and torch.allclose(a, b, atol=1e-6, rtol=0)
    a.backward()
    b.backward()
    assert chunked.lm_head.forward.__func__ is torch.nn.Linear.forward  # the head is restored
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6, rtol=1e-5), name
    plain.eval(), chunked.eval()
    with torch.no_grad():
        assert torch.allclose(head_loss(chunked, batch[:, :-1], batch[:, 1:], chunk=5)[0],
                              F.cross_entropy(plain(batch[:, :-1]).logits.flatten(0, 1), batch[:, 1:].flatten()), atol=1e-6)


def test_the_keys_are_validated_and_train_lm_runs(tmp_path, monkeypatch):
    import attnkit.data.lm as lm

    chunks: list[int] = []
    monkeypatch.setattr(lm, "head_loss", lambda *a, chunk, **k: (chunks.append(chunk), head_loss(*a, chunk=chunk, **k))[1])
    with pytest.raises(ConfigError, match="loss_chunk"):
        ExecutionConfig(loss_chunk=0).validate()
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question\n" * 20)
    common = ["train", "lm", "--text", str(text), "--set", "model.n_layers=1", "--set", "model.d_model=16", "--set", "model.n_heads=2",
              "--set", "model.context=16", "--set", "train.steps=2", "--set", "train.schedule.warmup=0", "--set", "train.batch_size=4", "--set", "data.sample_tokens=0",
              "--set", "train.device=cpu", "--set", "train.execution.chunked_loss=true", "--set", "train.execution.loss_chunk=24"]
    assert main([*common, "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "metrics.jsonl").is_file() and chunks and set(chunks) == {24}
    assert main([*common, "--set", "data.segment=8", "--out", str(tmp_path / "xl")]) == 2
