"""Recording attention probabilities during an ordinary forward pass.

:class:`Recorder` puts a forward hook on the kernel of every
:class:`~attnkit.attention.MultiHeadAttention` of a model. The model runs as it always does (its
kernels keep their fast paths); at the layers asked for, the hook takes the queries, keys, mask,
bias and ``causal`` flag the kernel was called with and recomputes the weights of the chosen heads
and query rows (:func:`attnkit.inspect.probs.probabilities`). Other layers cost nothing.
A positional score bias (ALiBi, T5, relative) is taken from the positional hook's call, which is
recorded with the bias it adds before it runs, fused or not.

Attention modules are grouped by where they sit: ``encoder``, ``decoder`` (decoder
self-attention) and ``cross`` in an encoder-decoder model, ``self`` in a model with one stack
(GPT, the BERT family). Within a group, calls are numbered in the order they happen, so a module
applied at every depth (ALBERT's shared layer) gives one entry per application. Each group's
result is a tuple with one ``(B, heads, rows, Tk)`` tensor per layer, the layout of
``transformers``' ``output_attentions`` that bertviz reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from attnkit.attention.multihead import MultiHeadAttention
from attnkit.inspect.probs import Index, probabilities

Select = Index | Mapping[str, Index]


@dataclass
class Attentions:
    """Recorded attention probabilities, by group.

    Attributes:
        groups: group name -> tuple of ``(B, heads, rows, Tk)`` tensors, one per recorded layer.
        layers: group name -> the layer number of each tensor.
    """

    groups: dict[str, tuple[Tensor, ...]] = field(default_factory=dict)
    layers: dict[str, list[int]] = field(default_factory=dict)

    def __getitem__(self, group: str) -> tuple[Tensor, ...]:
        if group not in self.groups:
            raise KeyError(f"no attention group {group!r}; recorded: {', '.join(self.groups) or 'none'}")
        return self.groups[group]

    @property
    def names(self) -> list[str]:
        """The recorded groups in model order."""
        return list(self.groups)


def attention_groups(model: nn.Module) -> list[tuple[str, MultiHeadAttention]]:
    """Every attention module of ``model`` (shared ones once) with its group name.

    Args:
        model: any attnkit model.

    Returns:
        ``(group, module)`` pairs in module order; group is ``encoder``/``decoder``/``cross``
        when the model has cross-attention, else ``self``.
    """
    mods = [(name, m) for name, m in model.named_modules() if isinstance(m, MultiHeadAttention)]
    has_cross = any(m.cross for _, m in mods)
    out = []
    for name, m in mods:
        if m.cross:
            group = "cross"
        elif not has_cross:
            group = "self"
        else:  # the self-attention of a layer that also has cross-attention is the decoder's
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            group = "decoder" if any(isinstance(c, MultiHeadAttention) and c.cross for c in parent.children()) else "encoder"
        out.append((group, m))
    return out


def _pick(sel: Select, group: str) -> Index:
    return sel.get(group) if isinstance(sel, Mapping) else sel


class Recorder:
    """Context manager recording attention probabilities of chosen layers, heads and rows.

    Args:
        model: an attnkit model.
        layers: layer numbers to record (all by default), or a dict by group.
        heads: heads to record (all by default), or a dict by group.
        rows: query rows to record (all by default), or a dict by group.
        groups: groups to record (all by default).

    Example::

        with Recorder(model, layers=[0, 3], rows=[0]) as rec:
            model(ids)
        rec.result()["self"]  # two (B, H, 1, T) tensors
    """

    def __init__(self, model: nn.Module, *, layers: Select = None, heads: Select = None, rows: Select = None,
                 groups: Sequence[str] | None = None) -> None:
        self.model, self.layers, self.heads, self.rows = model, layers, heads, rows
        self.modules = [(g, m) for g, m in attention_groups(model) if groups is None or g in groups]
        if not self.modules:
            raise ValueError(f"{type(model).__name__} has no attention modules" + (f" in groups {list(groups)}" if groups else ""))
        self._calls: dict[str, int] = {}
        self._module_calls: dict[str, int] = {}
        self._out: dict[str, list[tuple[int, Tensor]]] = {}
        self._handles: list[Any] = []
        self._inside = False

    def _record(self, group: str, kernel: nn.Module, q: Tensor, k: Tensor, mask: Tensor | None,
                bias: Callable[[], Tensor | None], causal: bool) -> None:
        """Count one attention call of ``group``; at a wanted layer, recompute its probabilities."""
        layer = self._calls.get(group, 0)
        self._calls[group] = layer + 1
        wanted = _pick(self.layers, group)
        if wanted is not None and layer not in set(int(i) for i in wanted):
            return
        w = probabilities(kernel, q, k, mask=mask, bias=bias(), causal=causal, heads=_pick(self.heads, group), rows=_pick(self.rows, group))
        self._out.setdefault(group, []).append((layer, w))

    def _hook(self, group: str) -> Callable[..., None]:
        def hook(kernel: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if self._inside:  # the call of a positional wrapper that has recorded it already
                return
            q, k = args[0], args[1]  # (B, H, Tq, D), (B, H or G, Tk, D)
            self._record(group, kernel, q, k, kwargs.get("mask"), lambda: kwargs.get("bias"), bool(kwargs.get("causal", False)))

        return hook

    def _position_hook(self, group: str) -> Callable[..., Any]:
        """Wrap the kernel call a positional bias hook hands the cache, so that the call is recorded with
        its score bias even where it runs fused (ALiBi or T5 as a FlexAttention score modification)."""

        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            q, k, call = output
            if call is args[0] or not all(hasattr(call, a) for a in ("kernel", "position", "q_pos", "offset")):
                return output  # rotary (the kernel itself), or a wrapper this recorder does not know: the kernel hook sees it
            return q, k, _RecordedCall(self, group, call)

        return hook
    def _count(self, group: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple) -> None:
            self._module_calls[group] = self._module_calls.get(group, 0) + 1

        return hook

    def __enter__(self) -> "Recorder":
        self._calls.clear()
        self._module_calls.clear()
        self._out.clear()
        seen: set[int] = set()
        for group, m in self.modules:
            if id(m.kernel) not in seen:
                seen.add(id(m.kernel))
                self._handles.append(m.kernel.register_forward_hook(self._hook(group), with_kwargs=True))
            self._handles.append(m.register_forward_pre_hook(self._count(group)))
            position = getattr(m, "position", None)
            if isinstance(position, nn.Module) and id(position) not in seen:
                seen.add(id(position))
                self._handles.append(position.register_forward_hook(self._position_hook(group)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def result(self) -> Attentions:
        """What was recorded: per group, a tuple of tensors in layer order.

        Raises:
            RuntimeError: an attention module computed its result without a call this recorder saw.
        """
        for group, n in self._module_calls.items():
            if self._calls.get(group, 0) != n:
                raise RuntimeError(f"{group}: {n} attention calls but {self._calls.get(group, 0)} kernel calls were seen; "
                                   "the attention module computed some without its kernel")
        res = Attentions()
        for group, items in self._out.items():
            res.groups[group] = tuple(w for _, w in items)
            res.layers[group] = [i for i, _ in items]
        return res


class _RecordedCall:
    """A positional hook's kernel call (:class:`attnkit.positions.hook.BiasedKernel`), recorded, then run as it was."""

    def __init__(self, recorder: Recorder, group: str, call: Any) -> None:
        self.recorder, self.group, self.call = recorder, group, call

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None = None, bias: Tensor | None = None,
                 causal: bool = False, need_weights: bool = False) -> Any:
        from attnkit.positions.hook import kernel_scale

        c = self.call

        def full_bias() -> Tensor:  # the score bias the positional kind adds on its unfused path
            pos = c.position.bias(q, k, c.q_pos, causal=causal or c.offset is None, scale=kernel_scale(c.kernel, q.shape[-1]),
                                  q_offset=c.offset)
            return pos if bias is None else bias + pos

        self.recorder._record(self.group, c.kernel, q, k, mask, full_bias, causal)
        self.recorder._inside = True
        try:
            return c(q, k, v, mask=mask, bias=bias, causal=causal, need_weights=need_weights)
        finally:
            self.recorder._inside = False


def attentions(model: nn.Module, *args: Any, layers: Select = None, heads: Select = None, rows: Select = None,
               groups: Sequence[str] | None = None, **kwargs: Any) -> Attentions:
    """Run ``model(*args, **kwargs)`` once, in eval mode without gradients, and return its attention probabilities.

    Args:
        model: an attnkit model (encoder-decoder, GPT, BERT family, any head on them).
        *args: the model's positional inputs (``ids``; ``src, tgt_in`` for the encoder-decoder).
        layers: layer numbers to record (all by default), or a dict by group.
        heads: heads to record (all by default), or a dict by group.
        rows: query rows to record (all by default), or a dict by group.
        groups: groups to record (all by default).
        **kwargs: the model's keyword inputs (``attention_mask``, ``segment_ids``, ...).

    Returns:
        :class:`Attentions`; ``result[group]`` is a tuple per layer of ``(B, heads, rows, Tk)`` tensors.
    """
    was_training = model.training
    model.eval()  # no dropout, and routing's centroids stay put
    try:
        with torch.no_grad(), Recorder(model, layers=layers, heads=heads, rows=rows, groups=groups) as rec:
            model(*args, **kwargs)
    finally:
        model.train(was_training)
    return rec.result()
