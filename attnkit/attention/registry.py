"""A registry of attention kernels, chosen by name.

A *kernel* is the score-and-mix step of attention: given per-head queries, keys and
values it returns the mixed values. Projections, heads and caches live in
:class:`attnkit.attention.MultiHeadAttention`; kernels only see ``(B, H, T, D)`` tensors.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable, TypeVar

from torch import nn

from attnkit.errors import ConfigError

_KERNELS: dict[str, type[nn.Module]] = {}

K = TypeVar("K", bound=type)


def register(name: str) -> Callable[[K], K]:
    """Class decorator: make a kernel available as ``attnkit.attention.get(name)``."""

    def deco(cls: K) -> K:
        if name in _KERNELS:
            raise ValueError(f"attention kernel {name!r} is registered twice")
        _KERNELS[name] = cls
        cls.kind = name  # type: ignore[attr-defined]
        return cls

    return deco


def names() -> list[str]:
    """The registered kernel names, sorted."""
    return sorted(_KERNELS)


def get(kind: str, **params: Any) -> nn.Module:
    """Build the kernel registered as ``kind`` with ``params``.

    Raises:
        ConfigError: unknown kind, unknown parameter or invalid value.
    """
    if kind not in _KERNELS:
        raise ConfigError(f"unknown attention kind {kind!r}; choose one of: {', '.join(names())}")
    cls = _KERNELS[kind]
    accepted = _accepted(cls)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise ConfigError(
            f"attention kind {kind!r} takes no parameter {unknown[0]!r}; it takes: {', '.join(sorted(accepted)) or 'none'}"
        )
    params = check_params(kind, params)
    try:
        return cls(**params)
    except ConfigError:
        raise
    except ValueError as e:  # a kernel's own check of a value: the same one-line error as the others
        raise ConfigError(f"attention kind {kind!r}: {e}") from e


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check the types of a kernel's ``params`` against its constructor's annotations, without building it.

    Names the kernel does not take are left alone here (:func:`get` refuses them when it builds).

    Args:
        kind: a registered kernel name (an unknown one is left to :func:`get`).
        params: the keyword arguments for the kernel, as a config gives them.

    Returns:
        ``params`` with the light coercions of :func:`attnkit.config._check_type` (an int where a float is wanted).

    Raises:
        ConfigError: a value of the wrong type, named as ``params.NAME``.
    """
    from attnkit.config import _check_type

    cls = _KERNELS.get(kind)
    if cls is None:
        return dict(params)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # an annotation only a type checker resolves: types are left to the kernel
        hints = {}
    return {name: _check_type(f"params.{name}", value, hints[name]) if name in hints else value for name, value in params.items()}


def build(kind: str, *, head_dim: int, n_heads: int, params: dict[str, Any] | None = None) -> nn.Module:
    """Build a kernel for a multi-head module, passing ``head_dim``/``n_heads`` to kernels that take them."""
    params = dict(params or {})
    if kind in _KERNELS:
        accepted = _accepted(_KERNELS[kind])
        if "head_dim" in accepted:
            params.setdefault("head_dim", head_dim)
        if "n_heads" in accepted:
            params.setdefault("n_heads", n_heads)
    return get(kind, **params)


def _accepted(cls: type) -> set[str]:
    sig = inspect.signature(cls.__init__)
    return {n for n, p in sig.parameters.items() if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
