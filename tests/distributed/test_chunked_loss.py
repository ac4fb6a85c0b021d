"""The chunked output layer and cross-entropy: the loss and every gradient of the plain
``F.cross_entropy`` over full logits, with padding and label smoothing, through a GPT with tied or
untied embeddings and with activation checkpointing; no full logits kept for the backward pass."""

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


def _inputs(bias: bool) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(3, 11, 16, generator=g) / 4).requires_grad_()  # logits of about unit scale: a loss near log V
    w = torch.randn(V, 16, generator=g, requires_grad=True)
    b = torch.randn(V, generator=g, requires_grad=True) if bias else None
    y = torch.randint(0, V, (3, 11), generator=g)
    y[0, :4] = -100  # padding
    y[2, -1] = -100
    return h, w, b, y


@pytest.mark.parametrize("chunk", [1, 5, 8, 33, 1000])
@pytest.mark.parametrize("smoothing,bias", [(0.0, False), (0.1, True)])
def test_loss_and_gradients_equal_the_plain_cross_entropy(chunk, smoothing, bias):
    h, w, b, y = _inputs(bias)
    want = F.cross_entropy(F.linear(h, w, b).flatten(0, 1), y.flatten(), ignore_index=-100, label_smoothing=smoothing)
    params = [h, w] + ([b] if bias else [])
    grads_want = torch.autograd.grad(want, params)
    got, n = chunked_cross_entropy(h, w, y, bias=b, chunk=chunk, label_smoothing=smoothing)
    grads_got = torch.autograd.grad(got, params)
    assert int(n) == int((y != -100).sum()) == 28
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    for a, e in zip(grads_got, grads_want):
        assert torch.allclose(a, e, atol=1e-6, rtol=1e-6)


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
    assert max(saved) == w.numel() < 20 * V  # hidden states, the weight, targets: no chunk's logits, they are recomputed


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
