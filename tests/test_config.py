"""The Config base class (strict, typed, frozen, JSON) through TransformerConfig and small local configs."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

from attnkit.config import Config, check
from attnkit.errors import ConfigError
from attnkit.models import AttentionConfig, TransformerConfig


@dataclass(frozen=True, kw_only=True)
class Inner(Config):
    window: int = 4
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True, kw_only=True)
class Outer(Config):
    betas: tuple[float, float] = (0.9, 0.98)
    sizes: tuple[int, ...] = ()
    limit: Optional[int] = None
    ratio: float | None = 0.5
    inner: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        check(self.betas[0] < 1, "betas", self.betas, "betas[0] must be below 1")


# -- unknown keys and bad values name the field ------------------------------------------------
def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match="'d_modle'") as info:
        TransformerConfig.from_dict({"d_modle": 512})
    assert "d_model" in str(info.value)  # the known keys are listed
    assert isinstance(info.value, ValueError)


def test_unknown_nested_key_is_named_with_its_path() -> None:
    with pytest.raises(ConfigError, match="'attention.knd'"):
        TransformerConfig.from_dict({"attention": {"knd": "dot"}})


def test_unknown_keyword_to_the_constructor_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        TransformerConfig(d_modle=3)  # type: ignore[call-arg]


def test_literal_violation_names_field_and_choices() -> None:
    with pytest.raises(ConfigError) as info:
        TransformerConfig(activation="swish")  # type: ignore[arg-type]
    msg = str(info.value)
    assert msg.startswith("activation='swish'") and "'gelu_tanh'" in msg
    with pytest.raises(ConfigError, match="norm_position='middle'"):
        TransformerConfig.from_dict({"norm_position": "middle"})


@pytest.mark.parametrize(
    "changes,field_name",
    [({"d_model": 3.0}, "d_model"), ({"dropout": "0.1"}, "dropout"), ({"share_embeddings": 1}, "share_embeddings"),
     ({"d_model": True}, "d_model"), ({"n_heads": 3}, "n_heads"), ({"dropout": 1.0}, "dropout"),
     ({"pad_id": 32000}, "pad_id"), ({"tgt_vocab_size": 100}, "share_embeddings"), ({"d_model": 0}, "d_model")],
)
def test_bad_values_name_the_field(changes: dict, field_name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field_name}="):
        TransformerConfig(**changes)


def test_values_are_checked_after_replace_too() -> None:
    with pytest.raises(ConfigError, match="^d_ff="):
        dataclasses.replace(TransformerConfig(), d_ff=-1)


def test_ints_become_floats_and_lists_tuples() -> None:
    cfg = TransformerConfig(dropout=0)
    assert cfg.dropout == 0.0 and isinstance(cfg.dropout, float)
    outer = Outer.from_dict({"betas": [0.8, 0.9], "sizes": [1, 2, 3], "limit": None})
    assert outer.betas == (0.8, 0.9) and outer.sizes == (1, 2, 3)


def test_tuple_optional_and_cross_field_checks() -> None:
    with pytest.raises(ConfigError, match="betas"):
        Outer(betas=(0.9,))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^sizes="):
        Outer(sizes=(1, "2"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^limit="):
        Outer(limit="3")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="^betas=.*below 1"):
        Outer(betas=(1.5, 0.9))
    assert Outer(limit=3).limit == 3 and Outer(ratio=None).ratio is None


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TransformerConfig().d_model = 3  # type: ignore[misc]


# -- nested configs ------------------------------------------------------------------------------
def test_nested_attention_config_from_dict() -> None:
    cfg = TransformerConfig.from_dict({"attention": {"kind": "additive", "params": {"attn_dim": 8}}})
    assert cfg.attention == AttentionConfig(kind="additive", params={"attn_dim": 8})
    assert cfg.layer_spec().attention_kind == "additive"
    assert cfg.layer_spec().attention_params == {"attn_dim": 8}


def test_nested_bad_values_name_the_dotted_field() -> None:
    with pytest.raises(ConfigError, match=r"^attention\.kind='bogus'.*scaled_dot"):
        TransformerConfig.from_dict({"attention": {"kind": "bogus"}})
    with pytest.raises(ConfigError, match=r"^attention\.dropout='x'"):
        TransformerConfig.from_dict({"attention": {"dropout": "x"}})
    with pytest.raises(ConfigError, match=r"^inner\.mode='c'"):
        Outer.from_dict({"inner": {"mode": "c"}})
    with pytest.raises(ConfigError, match="^attention="):
        TransformerConfig.from_dict({"attention": 3})


# -- JSON ---------------------------------------------------------------------------------------------
def test_json_round_trip(tmp_path: Path) -> None:
    cfg = TransformerConfig(d_model=256, n_heads=4, activation="gelu", attention=AttentionConfig(kind="dot", dropout=0.1))
    cfg.save(tmp_path / "config.json")
    data = json.loads((tmp_path / "config.json").read_text())
    position = {"kind": "none", "rotary_dim": None, "base": 10000.0, "layout": "half", "scaling": "none", "factor": 1.0,
                "original_max_len": 2048, "n_buckets": 32, "max_distance": 128, "bidirectional": None,
                "t5_train_path": "distance", "t5_lr_scale": 1.0}
    assert data["attention"] == {"kind": "dot", "dropout": 0.1, "params": {}, "position": position}
    assert TransformerConfig.load(tmp_path / "config.json") == cfg
    outer = Outer(betas=(0.5, 0.6), sizes=(3,), limit=7, inner=Inner(window=9, mode="b"))
    assert Outer.from_dict(json.loads(outer.to_json())) == outer


def test_load_missing_or_corrupt_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TransformerConfig.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{ nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TransformerConfig.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        TransformerConfig.load(tmp_path / "list.json")


# -- overrides (--set key=value) ------------------------------------------------------------------------
def test_with_overrides_parses_json_values() -> None:
    cfg = TransformerConfig().with_overrides(
        ["d_model=256", "n_heads=4", "dropout=0", "activation=gelu", "share_embeddings=false", "tie_output=false",
         "attention.kind=dot", "attention.params.window=3"]
    )
    assert (cfg.d_model, cfg.n_heads, cfg.dropout, cfg.activation, cfg.share_embeddings) == (256, 4, 0.0, "gelu", False)
    assert cfg.attention == AttentionConfig(kind="dot", params={"window": 3})
    assert Outer().with_overrides(["betas=[0.5, 0.7]", "inner.window=2"]) == Outer(betas=(0.5, 0.7), inner=Inner(window=2))


@pytest.mark.parametrize(
    "assignment,pattern",
    [("d_model=abc", r"^d_model='abc' must be an integer"),
     ("d_model=2.5", r"^d_model=2\.5 must be an integer"),
     ("dropout=true", r"^dropout=True must be a number"),
     ("share_embeddings=1", r"^share_embeddings=1 must be true or false"),
     ("activation=swish", r"^activation='swish' is not allowed"),
     ("attention.dropout=x", r"^attention\.dropout='x' must be a number"),
     ("attention.kind=bogus", r"^attention\.kind='bogus'"),
     ("inner.mode=z", r"^inner\.mode='z'"),
     ("d_modle=3", r"unknown config key 'd_modle'"),
     ("attention.knd=dot", r"unknown config key 'attention\.knd'"),
     ("d_model.x=1", r"'d_model' has no sub-keys"),
     ("d_model", r"key=value")],
)
def test_with_overrides_errors_name_the_key(assignment: str, pattern: str) -> None:
    target = Outer() if assignment.startswith("inner") else TransformerConfig()
    with pytest.raises(ConfigError, match=pattern):
        target.with_overrides([assignment])
