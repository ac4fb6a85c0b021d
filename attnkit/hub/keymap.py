"""Declarative weight-name maps between foreign checkpoints and attnkit models.

A :class:`KeyMap` is a list of :class:`Rule` s, each a source pattern, a target pattern and
an optional named transform. ``{i}`` in a pattern stands for a layer index:

    Rule("h.{i}.attn.c_attn.weight", "decoder.layers.{i}.self_attn.qkv_proj.weight", "transpose")

Conversion is strict: every source key must match a rule (or an ``ignore`` pattern), every
target key of the model must be produced (tied copies excepted), and every shape must
match; each error names the key. Maps run both ways (:meth:`KeyMap.to_attnkit`,
:meth:`KeyMap.from_attnkit`); the transforms are their own inverses.

A :class:`Fuse` joins several source tensors into one target along dim 0 (and splits it
back on export): separate query/key/value projections into attnkit's fused ``qkv_proj``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from attnkit.errors import CheckpointError

TRANSFORMS: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda t: t,
    # Hugging Face GPT-2 stores linear layers as Conv1D with weight (in, out); nn.Linear is (out, in).
    "transpose": lambda t: t.t().contiguous(),
}


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


@dataclass(frozen=True)
class Rule:
    """``source`` <-> ``target`` with an optional transform from :data:`TRANSFORMS`."""

    source: str
    target: str
    transform: str = "identity"

    def __post_init__(self) -> None:
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform={self.transform!r} is not one of {', '.join(TRANSFORMS)}")


@dataclass(frozen=True)
class Fuse:
    """``sources`` (equal shapes) concatenated along dim 0 <-> ``target``; all may hold ``{i}``.

    ``sizes``: the sources' lengths along dim 0 where they differ (grouped-query attention's
    query projection is longer than its key and value projections).
    """

    sources: tuple[str, ...]
    target: str
    sizes: tuple[int, ...] | None = None

    def join(self, state: dict[str, Tensor], source: str, prefix: str) -> dict[str, tuple[str, Tensor]]:
        """Pop every complete group of source keys from ``state``; a partial group raises, naming the missing key."""
        groups: dict[str, dict[int, str]] = {}
        patterns = [_compile(prefix + s) for s in self.sources]
        for key in state:
            for n, p in enumerate(patterns):
                m = p.match(key)
                if m:
                    groups.setdefault(m.groupdict().get("i") or "", {})[n] = key
        out: dict[str, tuple[str, Tensor]] = {}
        for i, parts in groups.items():
            if len(parts) < len(self.sources):
                absent = next(prefix + s.replace("{i}", i) for n, s in enumerate(self.sources) if n not in parts)
                raise CheckpointError(f"{source}: {absent!r} is missing; it is fused with {parts[min(parts)]!r} into {self.target.replace('{i}', i)!r}")
            tensors = [state.pop(parts[n]) for n in range(len(self.sources))]
            if self.sizes is not None and [t.shape[0] for t in tensors] != list(self.sizes):
                raise CheckpointError(f"{source}: {parts[0]!r} and the keys fused with it have {[t.shape[0] for t in tensors]} rows, the model expects {list(self.sizes)}")
            if self.sizes is None and len({tuple(t.shape) for t in tensors}) > 1:
                raise CheckpointError(f"{source}: {parts[0]!r} and the keys fused with it have different shapes {[tuple(t.shape) for t in tensors]}")
            out[self.target.replace("{i}", i)] = (parts[0], torch.cat(tensors, dim=0))
        return out

    def split(self, state: dict[str, Tensor]) -> dict[str, tuple[str, Tensor]]:
        """Pop every ``target`` key from ``state`` and cut it into the source tensors."""
        out: dict[str, tuple[str, Tensor]] = {}
        pattern = _compile(self.target)
        for key in [k for k in state if pattern.match(k)]:
            i = pattern.match(key).groupdict().get("i") or ""  # type: ignore[union-attr]
            whole = state.pop(key)
            parts = whole.split(list(self.sizes), dim=0) if self.sizes is not None else whole.chunk(len(self.sources), dim=0)
            for name, part in zip(self.sources, parts):
                out[name.replace("{i}", i)] = (key, part.contiguous())
        return out


@dataclass(frozen=True)
class KeyMap:
    """A set of rules plus source patterns that are known and deliberately dropped."""

    rules: tuple[Rule, ...]
    ignore: tuple[str, ...] = field(default=())
    fused: tuple[Fuse, ...] = field(default=())

    def _convert(self, state: dict[str, Tensor], forward: bool, source: str, prefix: str = "") -> dict[str, tuple[str, Tensor]]:
        """``{converted name: (original key, converted tensor)}``; unknown keys raise."""
        out: dict[str, tuple[str, Tensor]] = {}
        if self.fused:
            state = dict(state)
            for fuse in self.fused:
                out.update(fuse.join(state, source, prefix) if forward else fuse.split(state))
        ignored = [_compile(p) for p in self.ignore] if forward else []
        for full_key, tensor in state.items():
            key = full_key.removeprefix(prefix)
            hit = self._translate(key, forward)
            if hit is not None:
                name, rule = hit
                out[name] = (full_key, TRANSFORMS[rule.transform](tensor))
            elif not any(p.match(key) for p in ignored):
                raise CheckpointError(f"{source}: key {full_key!r} is not in the {'import' if forward else 'export'} key map; unsupported checkpoint variant")
        return out

    def _translate(self, key: str, forward: bool) -> tuple[str, Rule] | None:
        """The other side's name of ``key`` and the rule that maps it, or None."""
        for rule in self.rules:
            m = _compile(rule.source if forward else rule.target).match(key)
            if m:
                dest = rule.target if forward else rule.source
                return (dest.replace("{i}", m.group("i")) if "i" in m.groupdict() else dest), rule
        return None

    def to_attnkit(
        self, state: dict[str, Tensor], expected: dict[str, Tensor], source: str, *, optional: set[str] = frozenset(), prefix: str = ""
    ) -> dict[str, Tensor]:
        """Rename/transform a foreign state dict into attnkit names, checked against ``expected``.

        Args:
            expected: the model's own state dict (names and shapes to produce).
            optional: attnkit keys that may be absent (tied copies).
            prefix: removed from each source key before matching (errors show the full key).

        Raises:
            CheckpointError: naming the first missing, surplus or misshapen key on both sides.
        """
        out = self._convert(state, True, source, prefix)
        missing = sorted(set(expected) - set(out) - set(optional))
        if missing:
            hit = self._translate(missing[0], forward=False)
            wanted = f" (from {prefix + hit[0]!r})" if hit else ""
            raise CheckpointError(f"{source}: no weights for {missing[0]!r}{wanted}; {len(missing)} key(s) missing, the checkpoint is incomplete")
        for name, (key, t) in out.items():
            if name not in expected:
                raise CheckpointError(f"{source}: {key!r} maps to {name!r}, which the model does not have; does config.json give the right layer count?")
            if tuple(t.shape) != tuple(expected[name].shape):
                raise CheckpointError(
                    f"{source}: {key!r} gives {name} the shape {tuple(t.shape)}, the model expects {tuple(expected[name].shape)}"
                )
        return {name: t for name, (_, t) in out.items()}

    def from_attnkit(self, state: dict[str, Tensor], source: str = "model") -> dict[str, Tensor]:
        """Rename/transform an attnkit state dict into the foreign names."""
        return {name: t for name, (_, t) in self._convert(state, False, source).items()}


def peek_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``config.json`` of directory ``path`` as a dict, or ``None`` if it is missing or not a JSON object.

    Used to recognise a Hugging Face checkpoint before loading it; errors are left to the loader.
    """
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        data = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def read_hf_config(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """``(config dict, its path)`` of the Hugging Face directory ``path``; invalid JSON is a one-line error."""
    cfg_path = Path(path) / "config.json"
    try:
        return json.loads(cfg_path.read_text()), cfg_path
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None


SHARD_INDEX = "model.safetensors.index.json"


def read_hf_weights(path: str | os.PathLike) -> tuple[dict[str, Tensor], Path]:
    """``(state dict, its path)`` from ``model.safetensors`` in ``path``, or from the shards that
    ``model.safetensors.index.json`` lists (``save_pretrained`` of a large model); a pickle-only
    directory is refused by name."""
    from attnkit.models.base import WEIGHTS_NAME, load_weights

    weights_path = Path(path) / WEIGHTS_NAME
    if not weights_path.is_file() and (Path(path) / SHARD_INDEX).is_file():
        return read_shards(Path(path) / SHARD_INDEX), Path(path) / SHARD_INDEX
    if not weights_path.is_file():
        legacy = Path(path) / "pytorch_model.bin"
        hint = "; it has only pytorch_model.bin (pickle), convert it to safetensors first" if legacy.is_file() else ""
        raise CheckpointError(f"{weights_path} does not exist{hint}")
    return load_weights(weights_path), weights_path


def read_shards(index: Path) -> dict[str, Tensor]:
    """Every tensor of the shards that ``index`` (a ``model.safetensors.index.json``) maps, checked against its map.

    Raises:
        CheckpointError: the index is not JSON with a ``weight_map``, a shard is unreadable, or a
            mapped key is absent from its shard.
    """
    from attnkit.models.base import load_weights

    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is not a safetensors index with a weight_map ({type(e).__name__}: {e})") from None
    state: dict[str, Tensor] = {}
    for name in files:
        if Path(name).name != name:
            raise CheckpointError(f"{index}: shard {name!r} is not a file name in the directory")
        state.update(load_weights(index.parent / name))
    for key, name in weight_map.items():
        if key not in state:
            raise CheckpointError(f"{index}: {key!r} should be in {name}, which does not hold it")
    return state
