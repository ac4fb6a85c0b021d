"""TrainConfig nested by concern: the groups, cross-group checks, and one-line errors for the flat keys."""

from __future__ import annotations

import json

import pytest

from attnkit.cli.main import main
from attnkit.config import apply_overrides
from attnkit.errors import ConfigError
from attnkit.training.config import (
    EvalConfig, ExecutionConfig, OptimConfig, RegularizationConfig, ScheduleConfig, TrainConfig,
)

FLAT = {  # every key of the former flat layout and where it lives now
    "optimizer": "optim.name", "lr": "optim.lr", "betas": "optim.betas", "eps": "optim.eps",
    "weight_decay": "optim.weight_decay", "layer_decay": "optim.layer_decay", "clip_norm": "optim.clip_norm",
    "warmup": "schedule.warmup", "min_lr_ratio": "schedule.min_lr_ratio",
    "precision": "execution.precision", "compile": "execution.compile", "compile_mode": "execution.compile_mode",
    "cuda_graphs": "execution.cuda_graphs",
    "eval_every": "eval.every", "metric": "eval.metric", "metric_mode": "eval.mode", "stop_at": "eval.stop_at",
    "early_stopping_patience": "eval.patience", "eval_precision": "eval.precision",
    "label_smoothing": "reg.label_smoothing", "rdrop": "reg.rdrop", "ema_decay": "reg.ema_decay",
}


def test_defaults_are_the_papers() -> None:
    """Vaswani et al. 2017, sections 5.3-5.4: Adam(0.9, 0.98, 1e-9), Noam with 4000 warm-up steps, eps_ls = 0.1."""
    c = TrainConfig()
    assert (c.optim.name, c.optim.betas, c.optim.eps, c.optim.lr) == ("adam", (0.9, 0.98), 1e-9, 1.0)
    assert (c.schedule.kind, c.schedule.warmup) == ("noam", 4000)
    assert c.reg.label_smoothing == 0.1 and c.eval.every == 0 and not c.execution.cuda_graphs
    assert TrainConfig.from_dict(json.loads(c.to_json())) == c


def test_every_flat_key_is_mapped_to_an_existing_field() -> None:
    assert TrainConfig.moved == FLAT
    groups = {"optim": OptimConfig(), "schedule": ScheduleConfig(), "execution": ExecutionConfig(), "eval": EvalConfig(),
              "reg": RegularizationConfig()}
    for new in FLAT.values():
        group, name = new.split(".")
        assert hasattr(groups[group], name), new


@pytest.mark.parametrize("old", sorted(FLAT))
def test_a_flat_override_names_the_new_key(old: str) -> None:
    with pytest.raises(ConfigError, match=rf"^config key 'train\.{old}' has moved: write train\.{FLAT[old]}$"):
        apply_overrides([f"train.{old}=1"], {"train": TrainConfig()})
    with pytest.raises(ConfigError, match=rf"^config key '{old}' has moved: write train\.{FLAT[old]}$"):
        apply_overrides([f"{old}=1"], {"train": TrainConfig()})


def test_the_flat_schedule_string_names_schedule_kind() -> None:
    with pytest.raises(ConfigError, match=r"^config key 'train\.schedule' is a group now: write train\.schedule\.kind=cosine$"):
        apply_overrides(["train.schedule=cosine"], {"train": TrainConfig()})
    assert apply_overrides(["train.schedule.kind=cosine", "train.steps=5000"], {"train": TrainConfig()})["train"].schedule.kind == "cosine"


def test_a_flat_run_config_names_the_new_key(tmp_path) -> None:
    """A run_config.json written with the flat layout is refused with the new key, first for a moved key, then for schedule."""
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"steps": 10, "lr": 0.5, "warmup": 2}))
    with pytest.raises(ConfigError, match=r"^config key 'lr' has moved: write optim\.lr$"):
        TrainConfig.load(path)
    with pytest.raises(ConfigError, match=r"^config key 'train\.schedule' is a group now: write train\.schedule\.kind=noam$"):
        TrainConfig.from_dict({"steps": 10, "schedule": "noam"}, prefix="train.")


def test_a_flat_set_on_the_command_line_is_one_line(capsys, tmp_path) -> None:
    assert main(["train", "copy", "--out", str(tmp_path / "o"), "--set", "train.lr=1"]) == 2
    assert capsys.readouterr().err.strip() == "attnkit: error: config key 'train.lr' has moved: write train.optim.lr"


def test_group_values_are_checked_and_named_in_full() -> None:
    with pytest.raises(ConfigError, match=r"^train\.optim\.lr=0\.0 is not allowed; must be positive$"):
        apply_overrides(["train.optim.lr=0"], {"train": TrainConfig()})
    with pytest.raises(ConfigError, match=r"^train\.eval\.mode='best' is not allowed"):
        apply_overrides(["train.eval.mode=best"], {"train": TrainConfig()})


@pytest.mark.parametrize(("sets", "message"), [
    (["train.schedule.kind=linear", "train.steps=100", "train.schedule.warmup=100"],
     r"^train\.schedule\.warmup=100 is not allowed; must be below steps=100 for the linear schedule$"),
    (["train.eval.stop_at=0.5"], r"^train\.eval\.stop_at=0\.5 is not allowed; needs eval\.every > 0"),
    (["train.execution.cuda_graphs=true", "train.execution.compile=true", "train.execution.compile_mode=reduce-overhead"],
     r"^train\.execution\.cuda_graphs=True is not allowed; excludes execution\.compile_mode=reduce-overhead"),
])
def test_checks_across_groups_name_dotted_keys(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        apply_overrides(sets, {"train": TrainConfig()})
    # the same assignments in the other order fail the same way: validated once, together
    with pytest.raises(ConfigError, match=message):
        apply_overrides(list(reversed(sets)), {"train": TrainConfig()})


def test_warmup_and_steps_in_either_order() -> None:
    for sets in (["train.steps=30", "train.schedule.warmup=5"], ["train.schedule.warmup=5", "train.steps=30"]):
        t = apply_overrides(["train.schedule.kind=linear", *sets], {"train": TrainConfig()})["train"]
        assert (t.steps, t.schedule.warmup) == (30, 5)
