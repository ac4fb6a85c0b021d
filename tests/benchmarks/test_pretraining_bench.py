"""benchmarks/pretraining.py: the parameters counted for MFU, and the peak it divides by."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("pretraining")


def test_a_switch_gpt_counts_one_expert_per_layer(bench):
    from attnkit.layers.moe import MoEConfig
    from attnkit.models.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=50, context=8, n_layers=2, n_heads=2, d_model=16)
    dense, switch = GPT(cfg), GPT(cfg.replace(ffn="switch", moe=MoEConfig(n_experts=4)))
    routers = sum(layer.ffn.router.weight.numel() for layer in switch.decoder.layers)
    assert bench.active_parameters(switch) == bench.active_parameters(dense) + routers
    embeddings = dense.tok_embed.weight.numel() + dense.positions.embedding.weight.numel()
    assert bench.active_parameters(dense) == dense.num_parameters() - embeddings


def test_peak_is_unknown_on_the_cpu(bench):
    assert bench.peak_flops(torch.device("cpu")) is None
    assert set(bench.OBJECTIVES) >= {"mlm", "electra", "unilm", "t5", "bart", "mass", "gpt-dense", "gpt-switch"}
