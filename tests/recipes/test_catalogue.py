"""The recipe catalogue: exact names, one task each, listed one line each."""

from __future__ import annotations

import pytest

from attnkit import recipes
from attnkit.cli.main import main
from attnkit.errors import ConfigError
from attnkit.runs import job

REQUIRED = ["demo", "multi30k-de-en", "shakespeare-char", "sst2-minilm", "rte-minilm", "wnut17-minilm", "xquad-minilm",
            "listops-small", "bert-mlm-from-scratch"]


def test_catalogue_holds_the_published_runs():
    assert set(REQUIRED) <= set(recipes.names())


@pytest.mark.parametrize("name", recipes.names())
def test_recipe_configs_are_valid_for_its_task(name):
    """Every recipe (and its quick variant) builds valid configs of its task's types, and its stages exist."""
    r = recipes.get(name)
    j = job(r.task)
    for quick in (False, True):
        cfgs = {**j.defaults(), **r.configs(quick=quick)}
        for key, cls in j.config_types.items():
            assert isinstance(cfgs[key], cls), (name, key)
    for stage in r.before:
        recipes.get(stage.recipe)
    assert r.quick, f"{name} has no quick variant"


def test_lookup_is_exact():
    with pytest.raises(ConfigError, match="unknown recipe 'multi30k'"):
        recipes.get("multi30k")


def test_listing_one_line_each(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(recipes.names())
    assert any(line.startswith("multi30k-de-en") and "attnkit train translate" in line for line in lines)


def test_show_one(capsys):
    assert main(["recipes", "multi30k-de-en"]) == 0
    out = capsys.readouterr().out
    assert "run: attnkit train translate --recipe multi30k-de-en --data-root DATA --out DIR" in out
    assert "train.execution.cuda_graphs=true" in out and "model.n_encoder_layers = 3" in out
