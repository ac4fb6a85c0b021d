"""Activation checkpointing: the same gradients as without it (dropout included), recomputation
that really happens, frozen layers below trainable ones (the adapter case), and fp16 training
with a loss scaler against fp32."""

from __future__ import annotations

import pytest
import torch

import attnkit
from attnkit.errors import ConfigError
from attnkit.training import Trainer
from attnkit.training.distributed import apply_activation_checkpointing, layer_blocks

from _dist_scenarios import RaggedLM, config, tiny_gpt


def _gpt(dropout: float):
    from attnkit.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=31, context=8, d_model=16, n_heads=2, n_layers=3, dropout=dropout))


def _transformer():
    torch.manual_seed(0)
    return attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=23, tgt_vocab_size=23, d_model=16, d_ff=32, dropout=0.1))


def _grads(model, run) -> dict[str, torch.Tensor]:
    model.train()
    torch.manual_seed(1)  # the same dropout masks in both runs
    run(model).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _gpt_loss(model):
    x = torch.randint(0, 31, (2, 8), generator=torch.Generator().manual_seed(0))
    return model(x).logits.square().mean()


def _transformer_loss(model):
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randint(4, 23, (2, 7), generator=g), torch.randint(4, 23, (2, 5), generator=g)
    src[1, 5:] = model.config.pad_id  # padding: the layers take a mask and a bias by keyword
    return model(src, tgt).logits.square().mean()


@pytest.mark.parametrize(("build", "loss"), [(lambda: _gpt(0.1), _gpt_loss), (_transformer, _transformer_loss)], ids=["gpt", "transformer"])
def test_equal_gradients_with_and_without_checkpointing(build, loss):
    want = _grads(build(), loss)
    model = apply_activation_checkpointing(build())
    got = _grads(model, loss)
    assert got.keys() == want.keys() and len(want) > 0
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-7, msg=k)


def test_layers_are_recomputed_in_the_backward_pass_only_while_training():
    model = apply_activation_checkpointing(_gpt(0.0))
    calls = []
    # a pre-hook: the recomputation stops as soon as the last saved tensor is rebuilt, before a forward hook would run
    layer_blocks(model)[1].ffn.register_forward_pre_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    _gpt_loss(model).backward()
    assert len(calls) == 2  # the forward pass, then the recomputation inside the backward pass
    calls.clear()
    model.eval()
    with torch.no_grad():
        _gpt_loss(model)
    assert calls == [False]
    assert list(model.state_dict()) == list(_gpt(0.0).state_dict())  # names unchanged: checkpoints load as before


def test_frozen_layers_below_trainable_ones_still_get_gradients():
    """Adapters train a few weights of a frozen model, so the input of a checkpointed layer needs no
    gradient; the reentrant form then returns none for the layer's weights, the non-reentrant one does."""
    def frozen(model):
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("decoder.layers.2.ffn"))
        return model

    want = _grads(frozen(_gpt(0.1)), _gpt_loss)
    got = _grads(apply_activation_checkpointing(frozen(_gpt(0.1))), _gpt_loss)
    assert list(got) == list(want) == [n for n, p in _gpt(0.1).named_parameters() if n.startswith("decoder.layers.2.ffn")]
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-7, msg=k)


def test_a_model_without_layers_is_refused():
    with pytest.raises(ConfigError, match="no `layers` stack"):
        apply_activation_checkpointing(torch.nn.Linear(2, 2))


def test_fp16_gradients_are_unscaled_and_equal_fp32_within_half_precision(tmp_path):
    """The fp16 step's gradients, after the scaler divides its scale out and the token count is
    divided in, are the fp32 step's to half precision (a missing unscale would be off by the scale)."""
    micro = list(RaggedLM().batches(0, 0))[:2]
    fp32 = Trainer(tiny_gpt(), RaggedLM(), config(grad_accum=2, parallel="none"), tmp_path / "a", progress=False)
    fp32._step_body(micro)
    cfg = config(grad_accum=2, parallel="none", precision="fp16")
    fp16 = Trainer(tiny_gpt(), RaggedLM(), cfg, tmp_path / "b", progress=False)
    skipped = 0
    for _ in range(12):  # a step whose scaled gradients overflow is skipped (its gradients are inf) and the scale halved
        fp16.model.load_state_dict(tiny_gpt().state_dict())
        fp16._step_body(micro)
        if all(torch.isfinite(p.grad).all() for p in fp16.params if p.grad is not None):
            break
        skipped += 1
    n_first = int((micro[0][1][:, 1:]).sum())  # the first micro-batch's targets set the first scale
    assert fp16.scaler.get_scale() == pytest.approx(2.0**16 / n_first / 2**skipped)
    for (name, a), b in zip(fp32.model.named_parameters(), fp16.model.parameters()):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=2e-2, atol=2e-4, msg=name)


def test_fp16_resume_restores_the_loss_scale(tmp_path):
    """A straight fp16 run equals half of it, a restart and the other half: the checkpoint keeps the scale."""
    straight = Trainer(tiny_gpt(), RaggedLM(), config(steps=4, precision="fp16"), tmp_path / "a", progress=False)
    want = straight.fit().losses
    Trainer(tiny_gpt(), RaggedLM(), config(steps=2, save_every=2, precision="fp16"), tmp_path / "b", progress=False).fit()
    resumed = Trainer(tiny_gpt(), RaggedLM(), config(steps=4, precision="fp16"), tmp_path / "b", progress=False)
    got = resumed.fit(resume=True).losses
    assert got == want[2:]
    assert resumed.scaler.get_scale() == straight.scaler.get_scale()


@pytest.mark.parametrize("order", ["adapters first", "checkpointing first"])
def test_lora_adapters_get_the_same_gradients_with_checkpointing(order):
    """LoRA on a frozen GPT (attnkit.peft): the adapter weights, the only trainable ones, get the
    gradients they get without checkpointing, whichever transform is applied first."""
    from attnkit.peft import LoRAConfig, apply_lora

    def adapted(checkpointed: bool):
        model = _gpt(0.1)
        if checkpointed and order == "checkpointing first":
            apply_activation_checkpointing(model)
        torch.manual_seed(5)
        apply_lora(model, LoRAConfig(r=2, alpha=4, dropout=0.1, targets=("q", "v"), modules_to_save=()))
        for name, p in model.named_parameters():  # B starts at zero: move it so that A gets a gradient too
            if p.requires_grad:
                torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(len(name)))
        if checkpointed and order == "adapters first":
            apply_activation_checkpointing(model)
        return model

    want, got = _grads(adapted(False), _gpt_loss), _grads(adapted(True), _gpt_loss)
    assert got.keys() == want.keys() and len(want) == 4 * 3  # A and B of q and v in each of 3 layers
    for k in want:
        assert want[k].abs().max() > 0, k
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-7, msg=k)
