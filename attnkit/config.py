"""Frozen, keyword-only configuration dataclasses with strict JSON round trips.

Every config in attnkit subclasses :class:`Config`. The base class gives:

* type and ``Literal`` validation of every field in ``__post_init__`` (a bad value
  raises ``ValueError`` naming the field, the value and what is allowed);
* ``from_dict`` that rejects unknown keys and rebuilds nested configs;
* ``to_dict`` / ``save`` / ``load`` as JSON;
* ``with_overrides(["attention.kind=dot", "d_model=256"])`` for ``--set key=value``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from attnkit.errors import ConfigError
from attnkit.io import atomic_write_text

C = TypeVar("C", bound="Config")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _check_type(name: str, value: Any, tp: Any) -> Any:
    """Validate (and lightly coerce: int -> float, list -> tuple) one field value."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{name}={value!r} is not allowed; expected {_describe(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(name, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{name}={value!r} has the wrong type; expected {' or '.join(_describe(a) for a in args)}")
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{name}={value!r} must be a list")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(name, v, args[0]) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{name}={value!r} must have {len(args)} elements")
        return tuple(_check_type(name, v, a) for v, a in zip(value, args))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name}={value!r} must be a mapping")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return tp.from_dict(value, prefix=name + ".")
        raise ConfigError(f"{name}={value!r} must be a {tp.__name__}")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}={value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}={value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r} must be a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be a string")
        return value
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base class: validated, frozen, JSON-serialisable."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            checked = _check_type(f.name, value, hints[f.name])
            if checked is not value:
                object.__setattr__(self, f.name, checked)
        self.validate()

    def validate(self) -> None:
        """Cross-field checks; subclasses override and raise :class:`ConfigError`."""

    # -- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Config):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any], *, prefix: str = "") -> C:
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix or cls.__name__} must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown config key {prefix + unknown[0]!r} for {cls.__name__}; known keys: {', '.join(sorted(names))}"
            )
        try:
            return cls(**data)
        except ConfigError as e:
            raise ConfigError(f"{prefix}{e}" if prefix and not str(e).startswith(prefix) else str(e)) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_text(Path(path), self.to_json())

    @classmethod
    def load(cls: type[C], path: str | os.PathLike) -> C:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
        return cls.from_dict(data)

    # -- overrides -------------------------------------------------------------------
    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    def with_overrides(self: C, assignments: list[str] | tuple[str, ...]) -> C:
        """Apply ``key=value`` strings (dotted keys reach nested configs).

        Values are parsed as JSON when they parse (``3``, ``0.1``, ``true``, ``[0.9, 0.98]``),
        else taken as strings, then type-checked against the field.
        """
        cfg = self
        for a in assignments:
            if "=" not in a:
                raise ConfigError(f"--set expects key=value, got {a!r}")
            key, raw = a.split("=", 1)
            try:
                value: Any = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
            cfg = cfg._set_path(key.strip().split("."), value, key.strip())
        return cfg

    def _set_path(self: C, parts: list[str], value: Any, full: str) -> C:
        names = {f.name for f in dataclasses.fields(self)}
        head = parts[0]
        if head not in names:
            raise ConfigError(f"unknown config key {full!r}; known keys: {', '.join(sorted(names))}")
        if len(parts) > 1:
            child = getattr(self, head)
            if isinstance(child, Config):
                value = child._set_path(parts[1:], value, full)
            elif isinstance(child, dict):
                value = {**child, ".".join(parts[1:]): value}
            else:
                raise ConfigError(f"config key {head!r} has no sub-keys (in {full!r})")
        try:
            return dataclasses.replace(self, **{head: value})
        except ConfigError as e:
            msg = str(e)
            if not msg.startswith(full):
                msg = msg.replace(f"{head}=", f"{full}=", 1)
            raise ConfigError(msg) from None


def check(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Raise a :class:`ConfigError` naming ``field`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{field}={value!r} is not allowed; {allowed}")


def pick_preset(table: dict[str, C], name: str, what: str, **overrides: Any) -> C:
    """``table[name]`` with field ``overrides`` (exact names only); ``what`` names the table in the error."""
    if name not in table:
        raise ValueError(f"unknown {what} preset {name!r}; choose one of: {', '.join(table)}")
    return dataclasses.replace(table[name], **overrides)
