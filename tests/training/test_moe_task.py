"""Switch layers on the one run path: the router losses join the task's loss and the expert load reaches the metrics."""

from __future__ import annotations

import json

import torch

from attnkit.cli.main import main
from attnkit.layers.moe import MoEConfig
from attnkit.models.gpt import GPT, GPTConfig
from attnkit.objectives import causal_lm_loss
from attnkit.objectives.moe import load_balancing_loss, router_z_loss
from attnkit.training.moe import SwitchTask, wrap_switch


class LMTask:
    """A fixed batch of next-token prediction."""

    def __init__(self) -> None:
        self.ids = torch.randint(0, 40, (2, 9))

    def batches(self, epoch: int, seed: int):
        yield self.ids

    def loss(self, model, batch):
        return causal_lm_loss(model(batch[:, :-1]).logits, batch[:, 1:])

    def evaluate(self, model):
        return {"loss": float(self.loss(model, self.ids)[0].detach())}


def test_loss_adds_the_router_losses_of_every_layer():
    torch.manual_seed(0)
    moe = MoEConfig(n_experts=4, aux_loss=0.5, z_loss=0.25)
    model = GPT(GPTConfig(vocab_size=40, context=8, n_layers=2, n_heads=2, d_model=16, ffn="switch", moe=moe))
    inner = LMTask()
    task = wrap_switch(model, inner)
    assert isinstance(task, SwitchTask) and wrap_switch(GPT(GPTConfig(vocab_size=40, context=8, n_layers=1, n_heads=2, d_model=16)), inner) is inner
    loss, _ = task.loss(model, inner.ids)
    plain, _ = inner.loss(model, inner.ids)
    layers = [layer.ffn for layer in model.decoder.layers]
    balance = sum(load_balancing_loss(m.router_logits) for m in layers) / 2
    z = sum(router_z_loss(m.router_logits) for m in layers) / 2
    torch.testing.assert_close(loss, plain + 2 * (0.5 * balance + 0.25 * z))  # Switch: one aux loss per layer
    assert {"moe_load_cv", "moe_dropped", "moe_balance_loss", "moe_z_loss"} <= set(task.evaluate(model))


def test_router_losses_kept_by_a_training_forward_match_the_losses_of_its_logits_in_value_and_gradient():
    """A training forward keeps its router losses (computed in the layer, so that they join a compiled graph); the
    task's loss and every gradient equal those of the same losses recomputed from the kept logits, top-1 and top-2,
    with padding; an evaluation forward keeps none and the losses come from the logits."""
    for top_k in (1, 2):
        torch.manual_seed(0)
        moe = MoEConfig(n_experts=4, top_k=top_k, aux_loss=0.5, z_loss=0.25)
        model = GPT(GPTConfig(vocab_size=40, context=8, n_layers=2, n_heads=2, d_model=16, ffn="switch", moe=moe))
        inner = LMTask()
        task = wrap_switch(model, inner)
        layers = [layer.ffn for layer in model.decoder.layers]
        for m in layers:  # the last three inputs of the first row are padding (what mark_padding sets from a pad id)
            m.keep = torch.ones(2, 8, dtype=torch.bool)
            m.keep[0, -3:] = False
        loss, _ = task.loss(model, inner.ids)
        assert all(m.router_loss_values is not None for m in layers)
        grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
        plain, _ = inner.loss(model, inner.ids)
        keep = [m.keep_used for m in layers]
        assert keep[0] is not None and not bool(keep[0].all())
        balance = sum(load_balancing_loss(m.router_logits, k) for m, k in zip(layers, keep)) / 2
        z = sum(router_z_loss(m.router_logits, k) for m, k in zip(layers, keep)) / 2
        reference = plain + 2 * (0.5 * balance + 0.25 * z)
        torch.testing.assert_close(loss, reference)
        for g, r in zip(grads, torch.autograd.grad(reference, list(model.parameters()), allow_unused=True)):
            assert (g is None) == (r is None)
            if g is not None:
                torch.testing.assert_close(g, r)
        model.eval()
        with torch.no_grad():
            model(inner.ids[:, :-1])
        assert all(m.router_loss_values is None for m in layers)


def test_switch_gpt_trains_from_the_cli_with_load_in_the_metrics(tmp_path):
    (tmp_path / "t.txt").write_text("To be, or not to be, that is the question.\n" * 40)
    out = tmp_path / "run"
    assert main(["train", "lm", "--text", str(tmp_path / "t.txt"), "--out", str(out), "--no-progress", "--sample-tokens", "0",
                 "--set", "model.n_layers=1", "--set", "model.n_heads=2", "--set", "model.d_model=16", "--set", "model.context=16",
                 "--set", "train.batch_size=4", "--set", "train.steps=4", "--set", "train.eval.every=2", "--set", "train.device=cpu",
                 "--set", "train.schedule.warmup=1", "--set", "model.ffn=switch", "--set", "model.moe.n_experts=2"]) == 0
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "moe_load_cv" in line]
    assert evals and all(0 <= e["eval/moe_dropped"] < 1 for e in evals)
