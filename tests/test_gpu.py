"""GPU checks (skipped without CUDA): the SDPA fast path, bf16 training and cached decoding on the device."""

from __future__ import annotations

import pytest
import torch

import attnkit
import attnkit.attention as A
from attnkit.data.synthetic import synthetic_task
from attnkit.generation import greedy_decode
from attnkit.training import ExecutionConfig, OptimConfig, ScheduleConfig, Seq2SeqTask, TrainConfig, Trainer

pytestmark = pytest.mark.gpu


def naive(q, k, v, allowed, scale):
    s = (q.double() @ k.double().transpose(-2, -1)) * scale
    s = s.masked_fill(~allowed, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return (w @ v.double()).to(q.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("causal", [False, True])
def test_scaled_dot_on_cuda_matches_naive(dtype, causal):
    torch.manual_seed(0)
    b, h, t, d = 2, 4, 300, 64
    q, k, v = (torch.randn(b, h, t, d, device="cuda", dtype=dtype) for _ in range(3))
    lengths = torch.tensor([300, 137], device="cuda")
    pad = torch.arange(t, device="cuda")[None, :] < lengths[:, None]
    mask = pad[:, None, None, :]
    allowed = mask.expand(b, h, t, t)
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool, device="cuda").tril()
    out = A.get("scaled_dot")(q, k, v, mask=mask, causal=causal)
    ref = naive(q, k, v, allowed, d**-0.5)
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-5}[dtype]
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)
    assert torch.isfinite(out).all()


def test_model_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model = attnkit.Transformer(attnkit.preset("transformer-tiny")).eval()
    src = torch.randint(4, 64, (3, 11))
    src[1, 7:] = 0
    tgt = torch.randint(4, 64, (3, 9))
    with torch.no_grad():
        cpu = model(src, tgt).logits
        gpu = model.cuda()(src.cuda(), tgt.cuda()).logits.cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        a = greedy_decode(model, src.cuda(), use_cache=True)
        b = greedy_decode(model, src.cuda(), use_cache=False)
    assert torch.equal(a, b)


def test_bf16_training_on_cuda_learns(tmp_path):
    train, vin, vout, tok = synthetic_task("copy", n_train=512, n_valid=16, min_len=2, max_len=5)
    v = tok.get_vocab_size()
    torch.manual_seed(0)
    model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v))
    task = Seq2SeqTask(train, batch_size=64, device="cuda")
    cfg = TrainConfig(steps=150, batch_size=64, device="cuda", log_every=10, schedule=ScheduleConfig(warmup=30), optim=OptimConfig(lr=0.5), execution=ExecutionConfig(precision="auto"))
    result = Trainer(model, task, cfg, tmp_path, progress=False).fit()
    assert next(model.parameters()).is_cuda
    assert result.losses[-1] < 0.6 * result.losses[0]
    assert not torch.backends.cuda.cudnn_sdp_enabled()  # a varying-length task turns cuDNN attention off
    torch.backends.cuda.enable_cudnn_sdp(True)


def test_compiled_training_matches_eager(tmp_path):
    """train.execution.compile=true trains the same model (torch.compile of the forward)."""
    train, _, _, tok = synthetic_task("copy", n_train=256, n_valid=4, min_len=2, max_len=5)
    v = tok.get_vocab_size()
    losses = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v))
        cfg = TrainConfig(steps=20, batch_size=32, device="cuda", log_every=5, schedule=ScheduleConfig(warmup=5), optim=OptimConfig(lr=0.5), execution=ExecutionConfig(precision="fp32", compile=compile_))
        losses.append(Trainer(model, Seq2SeqTask(train, batch_size=32, device="cuda"), cfg, tmp_path / str(compile_), progress=False).fit().losses)
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=2e-3, atol=2e-3)
