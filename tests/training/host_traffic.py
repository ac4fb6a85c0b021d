"""A detector of host traffic in a training step: a host read of a device value, or host data brought into the step.

A step recorded as a CUDA graph (:mod:`attnkit.training.graphs`) may do neither; the detector finds both without a GPU,
on the ``meta`` device and on the CPU (see :class:`HostTraffic`).
"""

from __future__ import annotations

import traceback
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class HostTraffic(TorchDispatchMode):
    """Records every operator that reads a device value on the host or brings host data into the step.

    On a device other than the CPU (``meta`` here): ``aten._local_scalar_dense`` and any operator with a CPU tensor
    among its arguments. On the CPU: ``aten.lift_fresh``, the operator that takes in a tensor built from Python data.
    On both: an operator whose output's shape depends on the values (``nonzero``, ``masked_select``, indexing with a
    boolean mask).
    The first one raises; its record names the operator and the innermost line outside torch that called it.
    """

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device
        self.found: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = str(func)
        hosted = [a for a in tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor) and a.device.type == "cpu"]
        if self.device == "cpu":
            bad = name.startswith("aten.lift_fresh")
        else:
            bad = name.startswith("aten._local_scalar_dense") or bool(hosted)
        # a shape read from the values (a boolean mask as an index, nonzero): the host waits for the device
        sized = name.startswith(("aten.nonzero", "aten.masked_select")) or (
            name.startswith(("aten.index.", "aten.index_put")) and any(
                isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in tree_leaves(args[1:2])))
        bad = bad or sized
        if bad:  # stop at the first: a meta tensor has no value to read nor mixes with a CPU one
            self.found.append(f"{name} at {_caller()}")
            raise AssertionError(f"host traffic: {self.found[-1]}")
        return func(*args, **kwargs)


def _caller() -> str:
    """The innermost frame outside torch and this file: the line that issued the operator."""
    for frame in reversed(traceback.extract_stack()):
        if "/torch/" not in frame.filename and not frame.filename.endswith("host_traffic.py"):
            return f"{frame.filename}:{frame.lineno} {frame.line}"
    return "?"


def traffic(device: str, fn: Callable[[], Any]) -> list[str]:
    """What :class:`HostTraffic` finds while ``fn`` runs: the first host read or transfer, or nothing."""
    spy = HostTraffic(device)
    try:
        with spy:
            fn()
    except AssertionError:
        assert spy.found  # raised by the spy itself
    return spy.found
