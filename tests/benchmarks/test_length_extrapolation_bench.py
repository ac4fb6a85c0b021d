"""benchmarks/length_extrapolation.py: kinds run in separate calls end up in one table and one plot; the YaRN fine-tune
(``--yarn-finetune``) continues the rotary run into a run of its own and adds its row."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def test_kinds_of_separate_calls_share_the_days_file(load_benchmark, tmp_path: Path) -> None:
    if not (DATA / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"tiny Shakespeare not found under {DATA}")
    bench = load_benchmark("length_extrapolation")

    def call(*kinds: str) -> dict:
        bench.main(["--data-root", str(DATA), "--quick", "--device", "cpu", "--runs", str(tmp_path / "runs"),
                    "--out-dir", str(tmp_path / "r"), "--kinds", *kinds])
        (path,) = (tmp_path / "r").glob("length-extrapolation-*.json")
        assert path.with_suffix(".png").is_file()
        return json.loads(path.read_text())

    first = call("alibi")
    assert set(first["validation_loss"]) == {"alibi"} and first["lengths"] == [32, 64, 128, 256, 512]
    second = call("learned")
    assert set(second["validation_loss"]) == {"alibi", "learned"}  # the first call's row kept
    assert second["validation_loss"]["alibi"] == first["validation_loss"]["alibi"]
    assert second["validation_loss"]["learned"]["64"] is None  # no rows past the trained context
    assert set(second["commands"]) == set(second["train_seconds"]) == {"alibi", "learned"}


def snapshot(run_dir: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``run_dir``: its content's hash and its modification time."""
    return {str(f.relative_to(run_dir)): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for f in sorted(run_dir.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def rotary(load_benchmark, tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, dict]:
    """The benchmark module, its folder of runs and results after a quick call of the rotary kind alone."""
    if not (DATA / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"tiny Shakespeare not found under {DATA}")
    bench = load_benchmark("length_extrapolation")
    d = tmp_path_factory.mktemp("length_extrapolation_yarn")
    bench.main(["--data-root", str(DATA), "--quick", "--device", "cpu", "--runs", str(d / "runs"), "--out-dir", str(d / "r"),
                "--kinds", "rotary"])
    (path,) = (d / "r").glob("length-extrapolation-*.json")
    return bench, d, json.loads(path.read_text())


def test_yarn_finetune_adds_its_row(rotary) -> None:
    bench, d, first = rotary
    source = d / "runs" / "quick" / "length-extrapolation-rotary"
    before = snapshot(source)
    bench.main(["--data-root", str(DATA), "--quick", "--device", "cpu", "--runs", str(d / "runs"), "--out-dir", str(d / "r"),
                "--kinds", "rotary", "--yarn-finetune", "4"])
    (path,) = (d / "r").glob("length-extrapolation-*.json")
    result = json.loads(path.read_text())
    assert snapshot(source) == before  # the rotary run was reused, not trained again or written to
    row = result["validation_loss"]["rotary-yarn-ft"]
    assert list(row) == [str(n) for n in result["lengths"]] == ["32", "64", "128", "256", "512"]
    assert all(v is not None and math.isfinite(v) for v in row.values())
    assert result["validation_loss"]["rotary"] == first["validation_loss"]["rotary"]

    ft_dir = d / "runs" / "quick" / "length-extrapolation-rotary-yarn-ft4"
    model = bench.attnkit.load(ft_dir / "model").eval()
    position = model.config.attention.position
    assert (position.kind, position.scaling, position.factor, position.original_max_len) == ("rotary", "yarn", 16.0, 32)
    assert model.config.context == 256  # 8x the training context

    # the row against a naive evaluation: the mean cross-entropy of the non-overlapping windows of 512 of the last 10%
    tok = bench.load_tokenizer(ft_dir / "model" / "tokenizer.json")
    ids = torch.tensor(tok.encode((DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")).ids)
    valid = ids[int(0.9 * len(ids)):]
    n = (len(valid) - 1) // 512
    longer = bench.at_length(model, 512)
    with torch.no_grad():
        losses = [F.cross_entropy(longer(valid[None, i * 512 : (i + 1) * 512]).logits[0], valid[i * 512 + 1 : (i + 1) * 512 + 1]).item()
                  for i in range(n)]
    assert row["512"] == pytest.approx(sum(losses) / n, abs=2e-4)

    # the fine-tune's settings, and its tokens against the pretraining's: 4 steps x batch 8/8 x 256 over 20 steps x 8 x 32
    ft = result["yarn_finetune"]["rotary-yarn-ft"]
    assert {k: ft[k] for k in ("steps", "context", "scaling", "factor", "original_max_len", "batch_size")} == {
        "steps": 4, "context": 256, "scaling": "yarn", "factor": 16.0, "original_max_len": 32, "batch_size": 1}
    assert (ft["tokens"], ft["pretrain_tokens"], ft["token_fraction"]) == (4 * 256, 20 * 8 * 32, 0.2)
    assert "rotary-yarn-ft" in result["train_seconds"] and path.with_suffix(".png").is_file()


def test_yarn_finetune_leaves_the_rotary_run_untouched(rotary, tmp_path: Path) -> None:
    bench, d, _ = rotary
    source = d / "runs" / "quick" / "length-extrapolation-rotary"
    before = snapshot(source)
    weights = {k: v.clone() for k, v in bench.attnkit.load(source / "model").state_dict().items()}
    model_dir, ft = bench.yarn_finetune(source, tmp_path / "ft", str(DATA), True, torch.device("cpu"), [], 2)
    assert snapshot(source) == before
    assert model_dir == tmp_path / "ft" / "model" and ft["steps"] == 2
    tuned = bench.attnkit.load(model_dir).state_dict()
    assert set(tuned) == set(weights) and any(not torch.equal(tuned[k], weights[k]) for k in weights)  # it trained, on a copy


def test_yarn_finetune_needs_the_rotary_kind(load_benchmark, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("length_extrapolation")
    for argv in (["--kinds", "alibi", "--yarn-finetune", "4"], ["--yarn-finetune", "-1"]):
        with pytest.raises(SystemExit) as e:
            bench.main(argv)
        assert e.value.code == 2 and "--yarn-finetune" in capsys.readouterr().err
