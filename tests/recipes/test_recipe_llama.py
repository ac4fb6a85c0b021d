"""The shakespeare-llama recipe's quick variant through the command line and the one run path: it trains, and the
saved model is the Llama-family GPT that attnkit.load rebuilds, generate continues, and convert writes for transformers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import attnkit
from attnkit.cli.main import main
from attnkit.models.gpt import GPT

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "tinyshakespeare" / "input.txt").is_file(), reason=f"no tiny Shakespeare under {DATA}")
def test_quick_recipe_trains_a_llama_that_generates_and_converts(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "lm", "--recipe", "shakespeare-llama", "--quick", "--data-root", str(DATA), "--out", str(out),
            "--no-progress", "--set", "train.device=cpu"]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "run_config.json").read_text())
    assert record["recipe"] == "shakespeare-llama" and record["model"]["attention"]["position"]["kind"] == "rotary"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0]
    model = attnkit.load(out / "model")
    assert isinstance(model, GPT) and model.positions is None and model.config.kv_heads == 1
    capsys.readouterr()
    assert main(["generate", "--model", str(out / "model"), "--prompt", "To be", "--max-new-tokens", "5", "--seed", "0",
                 "--device", "cpu"]) == 0
    assert "To be" in capsys.readouterr().out
    assert main(["convert", "--to-hf", str(out / "model"), str(tmp_path / "hf")]) == 0
    capsys.readouterr()
    assert main(["generate", "--model", str(tmp_path / "hf"), "--prompt", "To be", "--max-new-tokens", "5", "--seed", "0",
                 "--device", "cpu"]) == 0  # the Hugging Face directory, with the tokenizer convert copied in
    assert "To be" in capsys.readouterr().out
    transformers = pytest.importorskip("transformers")
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model.eval()(ids).logits, atol=1e-5, rtol=1e-5)
