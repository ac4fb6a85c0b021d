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
    assert set(bench.OBJECTIVES) >= {"mlm", "electra", "unilm", "t5", "bart", "mass", "gpt-dense", "gpt-switch", "gpt-switch-grouped"}


def test_set_reaches_the_throughput_recipes_and_is_recorded(bench, tmp_path):
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not (root / "tinyshakespeare" / "input.txt").exists():
        pytest.skip("../shared/data/tinyshakespeare is not here")
    for extra in ([], ["--set", "model.n_layers=2"]):  # one file: a row per objective and set of assignments
        path = bench.main(["--quick", "--device", "cpu", "--data-root", str(root), "--parts", "throughput",
                           "--objectives", "gpt-dense", "--out-dir", str(tmp_path), *extra])
    rows = {len(r["overrides"]): r for r in json.loads(Path(path).read_text())["throughput"]}
    assert sorted(rows) == [0, 1] and rows[1]["overrides"] == ["model.n_layers=2"]
    assert rows[1]["active_parameters"] != rows[0]["active_parameters"]


def test_translation_runs_of_separate_calls_end_up_in_one_part(bench, tmp_path):
    """``--translations`` splits the part between calls (concurrent ones too): each call's runs are merged, none lost."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not (root / "multi30k" / "train.de.gz").exists():
        pytest.skip("../shared/data/multi30k is not here")
    common = ["--quick", "--device", "cpu", "--data-root", str(root), "--parts", "translation", "--out-dir", str(tmp_path)]
    bench.main([*common, "--translations", "multi30k-de-en"])
    path = bench.main([*common, "--translations", "multi30k-de-en-bart"])
    part = json.loads(Path(path).read_text())["translation"]
    assert set(part) == {"multi30k-de-en", "multi30k-de-en-bart"}
    assert all("test_bleu" in r for r in part.values())


def test_electra_and_mlm_of_separate_calls_end_up_in_one_comparison(bench, tmp_path):
    """``--compare`` splits electra-vs-mlm between calls: each objective's pretraining and fine-tuning is kept."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not (root / "tinyshakespeare" / "input.txt").exists() or not (root / "sst2" / "train.tsv").exists():
        pytest.skip("../shared/data/tinyshakespeare or sst2 is not here")
    common = ["--quick", "--device", "cpu", "--data-root", str(root), "--parts", "electra-vs-mlm", "--seeds", "0",
              "--out-dir", str(tmp_path)]
    bench.main([*common, "--compare", "mlm", "--pretrain-set", "train.steps=4"])
    path = bench.main([*common, "--compare", "electra"])
    payload = json.loads(Path(path).read_text())
    part = payload["electra_vs_mlm"]
    assert set(part["objectives"]) == {"mlm [train.steps=4]", "electra"} and part["seeds"] == [0]
    short = part["objectives"]["mlm [train.steps=4]"]
    assert short["pretrain_overrides"] == ["train.steps=4"] and part["objectives"]["electra"]["pretrain_overrides"] == []
    # the assignment reached the pretraining: it stopped after 4 of the quick run's 6 steps
    assert short["pretrain_final"]["best_step"] == 4 and part["objectives"]["electra"]["pretrain_final"]["best_step"] == 6
    assert all(len(o["sst2_dev_accuracy"]) == 1 for o in part["objectives"].values())
    assert "disc_over_constant" in part["objectives"]["electra"]["pretrain_final"]
    assert {r["objective"] for r in payload["throughput"]} == {"mlm", "electra"}  # each measured by its own call


def test_the_comparison_records_how_far_the_discriminator_is_from_the_constant_answer(bench):
    final = bench.pretrain_final({"disc_accuracy": 0.9, "replaced_fraction": 0.15, "mlm_loss": 6.0, "discriminator": "dir"})
    assert final["disc_over_constant"] == pytest.approx(0.05) and "discriminator" not in final
    assert "disc_over_constant" not in bench.pretrain_final({"mlm_loss": 6.0})
