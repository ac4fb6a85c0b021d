"""benchmarks/albert_unshare.py: the quick mode end to end on the shipped data, and the JSON it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import attnkit

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("albert_unshare")


@pytest.fixture(scope="module")
def result(bench, tmp_path_factory):
    if not (DATA / "sst2" / "train.tsv").is_file():
        pytest.skip(f"no SST-2 at {DATA}")
    where = tmp_path_factory.mktemp("albert-unshare")
    path = bench.main(["--quick", "--device", "cpu", "--data-root", str(DATA), "--runs", str(where / "runs"),
                       "--out-dir", str(where / "out"), "--seeds", *map(str, SEEDS)])
    return json.loads(path.read_text()), where / "runs"


def test_both_variants_of_every_seed_with_accuracies_and_their_summary(result):
    payload, _ = result
    rows = {(r["variant"], r["seed"]): r for r in payload["finetune"]["runs"]}
    assert set(rows) == {(v, s) for v in ("shared", "unshared") for s in SEEDS}
    summary = payload["finetune"]["summary"]
    for variant in ("shared", "unshared"):
        accs = [rows[(variant, s)]["dev_accuracy"] for s in SEEDS]
        assert all(0.0 <= a <= 1.0 for a in accs)
        assert summary[variant]["dev_accuracy"] == accs
        assert summary[variant]["mean"] == pytest.approx(sum(accs) / len(accs))
        assert summary[variant]["std"] == pytest.approx(torch.tensor(accs, dtype=torch.float64).std().item())  # sample std
    for s in SEEDS:
        assert rows[("shared", s)]["share_layers"] is True and rows[("unshared", s)]["share_layers"] is False
        assert rows[("shared", s)]["distinct_layers"] == 1 and rows[("unshared", s)]["distinct_layers"] == rows[("unshared", s)]["n_layers"]
    assert payload["pretrain"]["held_out"]["sop_accuracy"] is not None  # masked LM + sentence-order prediction


def test_unshared_model_has_n_minus_one_more_layers_of_parameters(result):
    """The difference against a torch.nn post-norm encoder layer of the pretrained model's sizes."""
    payload, _ = result
    m = payload["pretrain"]["model"]
    reference = torch.nn.TransformerEncoderLayer(m["d_model"], m["n_heads"], m["d_ff"])
    layer = sum(p.numel() for p in reference.parameters())
    rows = {(r["variant"], r["seed"]): r for r in payload["finetune"]["runs"]}
    for s in SEEDS:
        extra = rows[("unshared", s)]["trainable_parameters"] - rows[("shared", s)]["trainable_parameters"]
        assert extra == (m["n_layers"] - 1) * layer > 0
    assert payload["finetune"]["summary"]["unshared_minus_shared"]["extra_parameters"] == (m["n_layers"] - 1) * layer


def test_unshared_runs_start_from_the_pretrained_shared_layer(result):
    """Each seed's first loss (before any update) is the shared run's; the saved layers are the pretrained one moved a little."""
    payload, runs = result
    rows = {(r["variant"], r["seed"]): r for r in payload["finetune"]["runs"]}
    pretrained = attnkit.load(runs / "pretrain" / "model").bert
    start = pretrained.layers[0].state_dict()
    for s in SEEDS:
        assert rows[("unshared", s)]["first_losses"][0] == rows[("shared", s)]["first_losses"][0]
        config = json.loads((runs / f"sst2-unshared-seed{s}" / "run_config.json").read_text())
        assert Path(config["data"]["model"]) == runs / "pretrain" / "model" and config["model"]["share_layers"] is False
        layers = attnkit.load(runs / f"sst2-unshared-seed{s}" / "model").bert.layers
        for layer in layers:  # 3 steps at lr 1e-4 or less move each weight by well under 1e-3
            for name, tensor in layer.state_dict().items():
                assert (tensor - start[name]).abs().max() < 1e-3
        w = [layer.self_attn.qkv_proj.weight for layer in layers]
        assert not torch.equal(w[0], w[1])  # trained apart
    assert payload["finetune"]["summary"]["unshared_minus_shared"]["first_loss_gap"] == [0.0] * len(SEEDS)


def test_a_second_call_reuses_the_finished_runs(bench, result, tmp_path):
    payload, runs = result
    path = bench.main(["--quick", "--device", "cpu", "--data-root", str(DATA), "--runs", str(runs), "--out-dir", str(tmp_path),
                       "--parts", "finetune", "--seeds", "1"])
    again = json.loads(path.read_text())
    assert [r["reused"] for r in again["finetune"]["runs"]] == [True, True]
    assert again["pretrain"]["weights"] == payload["pretrain"]["weights"]


def test_a_repeated_seed_is_a_usage_error(bench, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--quick", "--data-root", str(DATA), "--seeds", "0", "0"])
    assert e.value.code == 2 and "--seeds 0 0" in capsys.readouterr().err
