"""Positional kinds and norms as recipes: selectable with --set, the extrapolation and norm families, and one
tiny training run from the command line with a relative position."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import attnkit
from attnkit import recipes, runs
from attnkit.cli.main import main
from attnkit.recipes.positions import KINDS
from attnkit.runs.path import resolve_configs


def test_extrapolation_family_is_shakespeare_char_with_each_position() -> None:
    base = recipes.get("shakespeare-char").configs()
    for name, position in KINDS.items():
        configs = recipes.get(f"length-extrapolation-{name}", "lm").configs()
        assert configs["model"].attention.position == position
        assert configs["model"].replace(attention=base["model"].attention) == base["model"]
        assert configs["train"] == base["train"] and configs["data"] == base["data"]


def test_norm_family_changes_only_the_norm() -> None:
    base = recipes.get("multi30k-de-en").configs()["model"]
    for norm in ("rms", "batch"):
        assert recipes.get(f"multi30k-de-en-norm-{norm}", "translate").configs()["model"] == base.replace(norm=norm)


@pytest.mark.parametrize("kind", ["rotary", "alibi", "t5_bias", "relative_key", "relative_key_query", "xl_relative"])
def test_set_selects_the_position_of_shakespeare_char(kind: str) -> None:
    job = runs.job("lm")
    configs = resolve_configs(job, recipe=recipes.get("shakespeare-char"), assignments=[f"model.attention.position.kind={kind}"],
                              quick=True, log=lambda s: None)
    assert configs["model"].attention.position.kind == kind and not configs["model"].learned_positions


def test_a_relative_position_trains_from_the_command_line(tmp_path: Path) -> None:
    text = tmp_path / "input.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40)
    out = tmp_path / "run"
    code = main(["train", "lm", "--recipe", "length-extrapolation-alibi", "--quick", "--out", str(out), "--no-progress",
                 "--set", f"data.text={text}", "--set", "train.device=cpu", "--set", "train.steps=4", "--set", "train.eval.every=4",
                 "--set", "data.sample_tokens=0"])
    assert code == 0
    assert json.loads((out / "run_config.json").read_text())["model"]["attention"]["position"]["kind"] == "alibi"
    model = attnkit.load(out / "model")
    assert model.config.attention.position.kind == "alibi" and model.positions is None
