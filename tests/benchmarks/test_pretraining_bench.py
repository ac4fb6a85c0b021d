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
    """``--compare`` splits electra-vs-mlm between calls: each objective's pretraining and fine-tuning is kept; on tiny
    Shakespeare the entries are named as they were before corpora could be chosen (``mlm``, ``electra [KEY=VALUE]``)."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not (root / "tinyshakespeare" / "input.txt").exists() or not (root / "sst2" / "train.tsv").exists():
        pytest.skip("../shared/data/tinyshakespeare or sst2 is not here")
    common = ["--quick", "--device", "cpu", "--data-root", str(root), "--parts", "electra-vs-mlm", "--seeds", "0",
              "--out-dir", str(tmp_path), "--corpus", "shakespeare"]
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
    assert all(o["corpus"] == "shakespeare" and o["corpus_files"] == ["tinyshakespeare/input.txt"] for o in part["objectives"].values())
    assert {r["objective"] for r in payload["throughput"]} == {"mlm", "electra"}  # each measured by its own call


def test_set_applies_to_the_comparison_and_picks_the_throughput_rows_measured_with_it(bench, tmp_path):
    """``--set`` reaches electra-vs-mlm's pretraining and names its entry; the steps come from a throughput row with the
    same assignments, measured first when the file has none (a row without assignments does not stand in for it)."""
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not (root / "tinyshakespeare" / "input.txt").exists() or not (root / "sst2" / "train.tsv").exists():
        pytest.skip("../shared/data/tinyshakespeare or sst2 is not here")
    common = ["--quick", "--device", "cpu", "--data-root", str(root), "--seeds", "0", "--out-dir", str(tmp_path), "--corpus", "shakespeare"]
    bench.main([*common, "--parts", "throughput", "--objectives", "mlm"])  # a row without assignments
    path = bench.main([*common, "--parts", "electra-vs-mlm", "--compare", "mlm", "--set", "train.steps=4"])
    payload = json.loads(Path(path).read_text())
    rows = sorted((tuple(r["overrides"]) for r in payload["throughput"]))
    assert rows == [(), ("train.steps=4",)]  # the comparison measured its own row
    entry = payload["electra_vs_mlm"]["objectives"]["mlm [train.steps=4]"]
    assert entry["execution_overrides"] == ["train.steps=4"] and entry["pretrain_overrides"] == []
    assert entry["pretrain_final"]["best_step"] == 4  # the assignment reached the pretraining


MIXED = ["sst2/train.tsv", "multi30k/train.en.gz", "squad/xquad.en.json", "rte/train.tsv", "wnut17/wnut17train.conll",
         "tinyshakespeare/input.txt"]  # the English corpus, tiny Shakespeare last (its tail is held out)


def test_the_corpus_reaches_both_objectives_and_entries_of_each_corpus_are_kept(bench, tmp_path, monkeypatch):
    """electra-vs-mlm pretrains both objectives on the mixed corpus unless ``--corpus`` says otherwise: the text each
    pretraining read is the corpus's files under the data root, recorded by relative path in an entry named after the
    corpus; a tiny Shakespeare call into the same file keeps the mixed entries and reads what the recipes read."""
    import json
    from pathlib import Path

    from attnkit import recipes, runs

    root = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
    if not all((root / f).exists() for f in [*MIXED, "sst2/dev.tsv"]):
        pytest.skip("../shared/data lacks a file of the mixed corpus")
    read: dict[str, list[tuple[str, ...]]] = {}
    real = bench.run_recipe

    def spy(name, out, **kwargs):  # the text every pretraining of electra-vs-mlm was configured with
        report = real(name, out, **kwargs)
        if out.name.startswith("pretrain-"):
            read.setdefault(name, []).append(tuple(report.configs["data"].text))
        return report

    monkeypatch.setattr(bench, "run_recipe", spy)
    common = ["--quick", "--device", "cpu", "--data-root", str(root), "--parts", "electra-vs-mlm", "--seeds", "0",
              "--out-dir", str(tmp_path)]
    bench.main(common)  # the default corpus
    path = bench.main([*common, "--corpus", "shakespeare", "--compare", "electra"])
    part = json.loads(Path(path).read_text())["electra_vs_mlm"]["objectives"]
    assert set(part) == {"mlm (mixed)", "electra (mixed)", "electra"}
    assert all(part[k]["corpus"] == "mixed" and part[k]["corpus_files"] == MIXED for k in ("mlm (mixed)", "electra (mixed)"))
    assert part["electra"]["corpus"] == "shakespeare" and part["electra"]["corpus_files"] == ["tinyshakespeare/input.txt"]
    assert all(len(o["sst2_dev_accuracy"]) == 1 for o in part.values())
    mixed = tuple(str(root / f) for f in MIXED)
    assert read["mlm"] == [mixed] and read["electra"][0] == mixed  # both objectives, the same files
    own = runs.resolve_configs(runs.job("electra"), recipe=recipes.get("electra-shakespeare"), quick=True, root=root)
    assert read["electra"][1] == tuple(own["data"].text) == (str(root / "tinyshakespeare" / "input.txt"),)


def test_the_corpus_is_chosen_by_name_not_by_a_pretraining_assignment(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--parts", "electra-vs-mlm", "--pretrain-set", "data.text=[\"a.txt\"]", "--out-dir", str(tmp_path)])
    assert e.value.code == 2 and "--corpus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench.main(["--parts", "electra-vs-mlm", "--corpus", "wiki", "--out-dir", str(tmp_path)])
    assert e.value.code == 2 and "invalid choice: 'wiki'" in capsys.readouterr().err


def test_the_comparison_records_how_far_the_discriminator_is_from_the_constant_answer(bench):
    final = bench.pretrain_final({"disc_accuracy": 0.9, "replaced_fraction": 0.15, "mlm_loss": 6.0, "discriminator": "dir"})
    assert final["disc_over_constant"] == pytest.approx(0.05) and "discriminator" not in final
    # always answering 'replaced' with probability 0.15: binary cross-entropy 0.15 ln(1/0.15) + 0.85 ln(1/0.85)
    assert final["disc_loss_constant"] == pytest.approx(0.15 * 1.8971199849 + 0.85 * 0.1625189295)
    assert "disc_over_constant" not in bench.pretrain_final({"mlm_loss": 6.0})


def test_finetune_assignments_reach_the_sst2_runs_of_both_and_name_the_entry(bench, tmp_path, monkeypatch, capsys):
    import json
    from pathlib import Path

    from attnkit import runs

    root = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
    if not (root / "tinyshakespeare" / "input.txt").exists() or not (root / "sst2" / "train.tsv").exists():
        pytest.skip("../shared/data/tinyshakespeare or sst2 is not here")
    seen: list[tuple[float, float]] = []
    real = runs.run

    def spy(job, cfgs, out, **kwargs):  # the fine-tuning settings each SST-2 run got
        if out.name.startswith("sst2-"):
            seen.append((cfgs["train"].optim.lr, cfgs["train"].optim.layer_decay))
        return real(job, cfgs, out, **kwargs)

    monkeypatch.setattr(runs, "run", spy)
    path = bench.main(["--quick", "--device", "cpu", "--data-root", str(root), "--parts", "electra-vs-mlm", "--seeds", "0",
                       "--out-dir", str(tmp_path), "--corpus", "shakespeare", "--finetune-set", "train.optim.lr=3e-4",
                       "--finetune-set", "train.optim.layer_decay=0.8"])
    assert seen == [(3e-4, 0.8), (3e-4, 0.8)]  # masked LM's encoder and ELECTRA's, one seed each
    part = json.loads(Path(path).read_text())["electra_vs_mlm"]["objectives"]
    key = " [finetune train.optim.lr=3e-4, finetune train.optim.layer_decay=0.8]"
    assert set(part) == {"mlm" + key, "electra" + key}
    assert part["electra" + key]["finetune_overrides"] == ["train.optim.lr=3e-4", "train.optim.layer_decay=0.8"]
    with pytest.raises(SystemExit) as e:
        bench.main(["--parts", "electra-vs-mlm", "--finetune-set", "lr", "--out-dir", str(tmp_path)])
    assert e.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err
