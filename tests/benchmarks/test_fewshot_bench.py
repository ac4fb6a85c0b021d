"""benchmarks/fewshot.py turns the TASK-pet recipes into each method by assignments the run path accepts."""

from __future__ import annotations

import pytest

from attnkit import recipes
from attnkit.runs import job
from attnkit.runs.path import resolve_configs


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("fewshot")


@pytest.mark.parametrize("task", ["sst2", "rte"])
def test_each_method_is_the_recipe_with_its_assignments(bench, task):
    recipe = recipes.get(f"{task}-pet", "fewshot")
    got = {}
    for method in ("finetune", "pet", "ptuning", "autoprompt"):
        cfgs = resolve_configs(job("fewshot"), recipe=recipe, assignments=bench.method_assignments(method), log=lambda s: None)
        got[method] = cfgs
    assert got["finetune"]["data"].method == "finetune" and got["finetune"]["peft"].method == "none"
    assert got["pet"]["data"].method == "pet" and got["pet"]["data"].distill and got["pet"]["data"].patterns == recipe.data.patterns
    p = got["ptuning"]
    assert (p["peft"].method, p["peft"].n_virtual, p["data"].distill, p["train"].optim.lr) == ("ptuning", 20, False, bench.PTUNING_LR)
    assert got["autoprompt"]["data"].patterns == ("auto",) and not got["autoprompt"]["data"].distill
    for cfgs in got.values():  # the protocol is the same for every method
        assert (cfgs["data"].shots, cfgs["data"].seeds, cfgs["train"].steps) == (16, 5, 1000)
