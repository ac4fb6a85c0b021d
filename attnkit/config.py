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
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, get_args, get_origin

from attnkit.errors import ConfigError
from attnkit.io import atomic_write_text, read_json_object

C = TypeVar("C", bound="Config")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _check_type(name: str, value: Any, tp: Any, *, finite: bool = True) -> Any:
    """Validate (and lightly coerce: int -> float, list -> tuple) one field value.

    A ``float`` must be finite (no ``nan``, ``inf``) unless ``finite`` is False: a field whose
    config class lists it in ``Config.nonfinite``.
    """
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
                return _check_type(name, value, a, finite=finite)
            except ConfigError as e:
                errors.append(str(e))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{name}={value!r} has the wrong type; expected {' or '.join(_describe(a) for a in args)}")
    if origin is tuple:
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"{name}={value!r} must be a list")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_type(name, v, args[0], finite=finite) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{name}={value!r} must have {len(args)} elements")
        return tuple(_check_type(name, v, a, finite=finite) for v, a in zip(value, args))
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
        try:
            number = float(value)
        except OverflowError:
            raise ConfigError(f"{name}={value!r} is not allowed; too large for a float") from None
        if finite and not math.isfinite(number):
            raise ConfigError(f"{name}={value!r} is not allowed; must be a finite number")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}={value!r} must be a string")
        return value
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base class: validated, frozen, JSON-serialisable.

    ``moved`` maps a field name a subclass no longer has to the dotted path that replaced it,
    so an old key gets an error naming the new one. ``nonfinite`` names the float fields that
    accept ``nan`` and ``inf``; every other float field must be finite.
    """

    moved: ClassVar[dict[str, str]] = {}
    nonfinite: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            checked = _check_type(f.name, value, hints[f.name], finite=f.name not in self.nonfinite)
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
        moved = [k for k in unknown if k in getattr(cls, "moved", {})]
        if moved:
            raise ConfigError(f"config key {prefix + moved[0]!r} has moved: write {prefix}{cls.moved[moved[0]]}")  # type: ignore[attr-defined]
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
        return cls.from_dict(read_json_object(Path(path), ConfigError, "config file"))

    # -- overrides -------------------------------------------------------------------
    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    def with_overrides(self: C, assignments: list[str] | tuple[str, ...], *, prefix: str = "") -> C:
        """Apply ``key=value`` strings (dotted keys reach nested configs) all at once.

        Values are parsed as JSON when they parse (``3``, ``0.1``, ``true``, ``[0.9, 0.98]``),
        else taken as strings. Every assignment is written into the config's dictionary first
        and the result is validated once, so the order of the assignments never matters
        (``steps=30`` with ``warmup=5`` passes in either order). ``prefix`` (``"train."``) is
        prepended to the keys named in errors.
        """
        data = self.to_dict()
        for a in assignments:
            key, value = parse_assignment(a)
            _assign(type(self), data, key.split("."), value, prefix + key)
        return type(self).from_dict(data, prefix=prefix)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)``, the value parsed as JSON where it parses, else kept as a string."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def _assign(cls: type, data: dict[str, Any], parts: list[str], value: Any, full: str) -> None:
    """Write ``value`` at ``parts`` inside ``data`` (the ``to_dict`` of a ``cls``), checking each key."""
    names = {f.name for f in dataclasses.fields(cls)}
    head = parts[0]
    if head not in names:
        moved = getattr(cls, "moved", {}).get(head)
        if moved is not None:
            where = full[: len(full) - len(".".join(parts))]
            raise ConfigError(f"config key {full!r} has moved: write {where}{moved}")
        raise ConfigError(f"unknown config key {full!r}; known keys: {', '.join(sorted(names))}")
    if len(parts) == 1:
        data[head] = value
        return
    tp = _hints(cls)[head]
    child = data.get(head)
    if isinstance(tp, type) and issubclass(tp, Config) and isinstance(child, dict):
        _assign(tp, child, parts[1:], value, full)
    elif isinstance(child, dict):
        data[head] = {**child, ".".join(parts[1:]): value}
    else:
        raise ConfigError(f"config key {head!r} has no sub-keys (in {full!r})")


def apply_overrides(assignments: list[str] | tuple[str, ...], configs: dict[str, Config]) -> dict[str, Config]:
    """Apply ``--set key=value`` assignments to a set of named configs, all at once.

    ``model.d_model=256`` and ``train.optim.lr=2e-4`` name their config; a bare ``d_model=256``
    goes to the one config that has a top-level field of that name (ambiguous or unknown names
    are errors). The assignments of each config are applied together and validated once
    (:meth:`Config.with_overrides`): their order never matters.

    Args:
        assignments: ``key=value`` strings, as given to ``--set``.
        configs: the configs by name (``{"model": ..., "train": ..., "data": ...}``).

    Returns:
        A new dict with every named config replaced by its overridden copy.
    """
    grouped: dict[str, list[str]] = {name: [] for name in configs}
    for a in assignments:
        key, _ = parse_assignment(a)
        head = key.split(".", 1)[0]
        if head in configs and "." in key:
            grouped[head].append(a.split(".", 1)[1])
            continue
        owners = [n for n, c in configs.items() if head in {f.name for f in dataclasses.fields(c)}]
        if not owners:
            moved = [f"{n}.{c.moved[head]}" for n, c in configs.items() if head in getattr(c, "moved", {})]
            if moved:
                raise ConfigError(f"config key {key!r} has moved: write {moved[0]}")
            known = ", ".join(f"{n}.{f.name}" for n, c in configs.items() for f in dataclasses.fields(c))
            raise ConfigError(f"unknown config key {key!r} in --set; known keys: {known}")
        if len(owners) > 1:
            raise ConfigError(f"--set {key} is ambiguous; write {' or '.join(f'{o}.{key}' for o in owners)}")
        grouped[owners[0]].append(a)
    return {name: (cfg.with_overrides(grouped[name], prefix=f"{name}.") if grouped[name] else cfg) for name, cfg in configs.items()}


def check(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Raise a :class:`ConfigError` naming ``field`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{field}={value!r} is not allowed; {allowed}")


def pick_preset(table: dict[str, C], name: str, what: str, **overrides: Any) -> C:
    """``table[name]`` with field ``overrides`` (exact names only); ``what`` names the table in the error."""
    if name not in table:
        raise ConfigError(f"unknown {what} preset {name!r}; choose one of: {', '.join(table)}")
    return dataclasses.replace(table[name], **overrides)
