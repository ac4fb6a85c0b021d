"""Training on several processes (DDP, FSDP2) and activation checkpointing, applied to a built model.

``torchrun --nproc_per_node N`` starts ``N`` copies of a training command and tells each its
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (and where to meet: ``MASTER_ADDR``/``MASTER_PORT``
or a rendezvous endpoint); :func:`init_distributed` joins that group once per process (NCCL
on CUDA, gloo on the CPU) and pins the process to GPU ``LOCAL_RANK``. The
:class:`~attnkit.training.loop.Trainer` then asks :meth:`Parallel.wrap` for the model it
trains:

* ``ddp``: DistributedDataParallel (Li et al. 2020, PyTorch Distributed, VLDB): every process
  holds the whole model; the backward pass averages gradients over the processes bucket by
  bucket while it runs. With gradient accumulation the non-final micro-batches run under
  ``no_sync`` (section 3.2.4), so one exchange happens per optimizer step, not one per
  micro-batch.
* ``fsdp``: FSDP2's ``fully_shard`` (Zhao et al. 2023, PyTorch FSDP, VLDB): each layer's
  parameters, gradients and optimizer state are split over the processes; a layer's full
  parameters are gathered just before its forward and backward and freed after, and gradients
  are reduce-scattered. On CUDA the gathered parameters are bf16 and gradients are reduced in
  fp32 (``MixedPrecisionPolicy``). Non-final micro-batches keep their gradients unsharded and
  unreduced (``set_requires_gradient_sync(False)``).

The batch of an optimizer step is global. Each micro-batch's summed loss is back-propagated
(its mean times its token count ``n_i``); after the last micro-batch the token counts of all
processes are summed by one all-reduce and the averaged gradients divided by ``N_total / P``
(``P`` processes), so the gradient is that of the mean loss over every target token of the
global batch: processes with more tokens weigh more, as they would in one process.

The data: every process walks the task's batches in the same order (fixed by ``(seed,
epoch)``) and, of the ``P * grad_accum`` micro-batches of a step, process ``r`` takes those at
positions ``r, r + P, ...``. One process with ``grad_accum * P`` sees the same micro-batches,
and a checkpoint's data position is global, so a run resumes on another number of processes
where it stopped (with ``grad_accum`` changed so that ``P * grad_accum`` stays the same).

Checkpoints are the single-process format: process 0 writes them (under FSDP the weights and
the optimizer state are first gathered through ``torch.distributed.checkpoint.state_dict``
into full tensors on process 0) and the others wait at a barrier; every process reads them on
resume.

Activation checkpointing (Chen et al. 2016, Training Deep Nets with Sublinear Memory Cost,
section 4) stores only each layer's input in the forward pass and recomputes the layer's
activations during the backward pass: activation memory falls from one copy per layer to one
layer's worth, for about one extra forward pass of compute.
"""

from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from attnkit.errors import CheckpointError, ConfigError
from attnkit.models.base import PretrainedModel, load_state_strict

_CHECKPOINTED = "_attnkit_checkpointed"


# -- activation checkpointing --------------------------------------------------------------
def layer_blocks(model: nn.Module) -> list[nn.Module]:
    """The Transformer layers of ``model``: the members of every ``nn.ModuleList`` named ``layers``
    (encoder, decoder, BERT and GPT stacks), each once (ALBERT's one shared layer is one block)."""
    blocks: list[nn.Module] = []
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers":
            for block in module:
                if id(block) not in seen:
                    seen.add(id(block))
                    blocks.append(block)
    return blocks


def apply_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute each layer's activations in the backward pass instead of storing them.

    Each block's ``forward`` becomes ``torch.utils.checkpoint.checkpoint(forward, ...,
    use_reentrant=False)`` while the model trains with gradients on; evaluation and decoding
    call it directly. The non-reentrant form recomputes through autograd's saved-tensor hooks,
    so it yields gradients for parameters of layers whose inputs need none (adapters on a frozen
    model, where the reentrant form silently returns no gradients), accepts keyword arguments,
    and replays the dropout masks of the forward pass (the RNG state is saved and restored).
    The parameter names, and so checkpoints, are unchanged. Applying it twice does nothing more.

    Args:
        model: a built model (also one with adapters or ``fully_shard`` applied later).

    Returns:
        ``model``, changed in place.

    Raises:
        ConfigError: ``model`` has no ``layers`` stack to checkpoint.
    """
    blocks = layer_blocks(model)
    if not blocks:
        raise ConfigError(f"train.execution.checkpointing=true: {type(model).__name__} has no `layers` stack to checkpoint")
    for block in blocks:
        if getattr(block, _CHECKPOINTED, False):
            continue
        block.forward = functools.partial(_checkpointed, block, block.forward)  # type: ignore[method-assign]
        setattr(block, _CHECKPOINTED, True)
    return model


def _checkpointed(block: nn.Module, forward: Any, *args: Any, **kwargs: Any) -> Any:
    if block.training and torch.is_grad_enabled():
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


# -- the process group -----------------------------------------------------------------------
def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process: ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_processes() -> int:
    """How many processes ``torchrun`` started (``WORLD_SIZE``; 1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def init_distributed(device: str = "auto") -> tuple[int, int]:
    """Join the process group ``torchrun`` set up, once per process; pin CUDA to ``LOCAL_RANK``.

    Nothing happens in a single process or where a group exists already.

    Args:
        device: ``train.device``: ``auto`` or ``cuda`` use NCCL on GPU ``LOCAL_RANK`` where CUDA
            is present, ``cpu`` (or no CUDA) uses gloo.

    Returns:
        ``(rank, world size)``.

    Raises:
        ConfigError: several processes with ``device=cuda:N``, which would put them all on one GPU.
    """
    if dist.is_available() and dist.is_initialized():
        return world()
    if launched_processes() == 1:
        return 0, 1
    if not dist.is_available():
        raise ConfigError("torchrun started several processes but this torch build has no torch.distributed")
    if device.startswith("cuda:"):
        raise ConfigError(f"train.device={device!r} under torchrun: each process takes GPU LOCAL_RANK; use train.device=cuda or auto")
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # so that "cuda" means this process's GPU
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return world()


def resolve_parallel(parallel: str, size: int) -> str:
    """The strategy ``train.execution.parallel`` picks for ``size`` processes: ``none``, ``ddp`` or ``fsdp``."""
    if size == 1:
        return "none"
    if parallel == "none":
        raise ConfigError(f"train.execution.parallel=none but torchrun started {size} processes; use ddp, fsdp or auto")
    return "ddp" if parallel == "auto" else parallel


class _DDP(DistributedDataParallel):
    """DistributedDataParallel that lets tasks read the model's own attributes (``model.config``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":  # not set yet (inside DDP's constructor): no recursion
                raise
            return getattr(self.module, name)


class Parallel:
    """How the Trainer's processes share a step: the wrapped model, the gradient exchange, the files.

    With one process every method is the plain single-process operation.
    """

    def __init__(self, mode: str, rank: int, size: int, device: torch.device, module: nn.Module) -> None:
        self.mode, self.rank, self.size, self.device = mode, rank, size, device
        self.module = module  # what the forward pass calls: the DDP wrapper, or the model itself

    @classmethod
    def wrap(cls, model: nn.Module, parallel: str, precision: str, device: torch.device) -> "Parallel":
        """Wrap ``model`` (already on ``device``) for the processes of this run.

        Args:
            model: the built model; ``fully_shard`` changes it in place, so an optimizer must be
                built after this call.
            parallel: ``train.execution.parallel``.
            precision: ``train.execution.precision``; on CUDA, FSDP gathers bf16 parameters unless it is ``fp32``.
            device: the training device.

        Returns:
            The :class:`Parallel` of this process.
        """
        rank, size = world()
        mode = resolve_parallel(parallel, size)
        module: nn.Module = model
        if mode == "ddp":
            ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
            # find_unused_parameters: a head a task leaves unused (a pooler under MLM) gets no gradient, which
            # DDP must be told; buffers (routing attention's centroids) follow process 0's at each forward
            module = _DDP(model, device_ids=ids, find_unused_parameters=True)
        elif mode == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

            mp = MixedPrecisionPolicy()
            if device.type == "cuda" and precision != "fp32":
                mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
            for block in layer_blocks(model):
                fully_shard(block, mp_policy=mp)
            fully_shard(model, mp_policy=mp)  # the rest: embeddings, final norm, heads (tied weights stay together)
        return cls(mode, rank, size, device, module)

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints (rank 0)."""
        return self.rank == 0

    # -- the step --------------------------------------------------------------------------
    @contextmanager
    def micro_step(self, model: nn.Module, last: bool) -> Iterator[None]:
        """Inside: one micro-batch's forward and backward; gradients are exchanged only if ``last``."""
        if self.mode == "ddp" and not last:
            with self.module.no_sync():  # type: ignore[operator]
                yield
        elif self.mode == "fsdp":
            model.set_requires_gradient_sync(last)  # type: ignore[operator]
            yield
        else:
            yield

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the processes (one all-reduce; no-op in one process)."""
        if self.size > 1:
            values = values.to(self.device) if self.device.type == "cuda" else values.cpu()
            dist.all_reduce(values)
        return values

    def clip_grad_norm_(self, params: list[nn.Parameter], max_norm: float) -> None:
        """Rescale the gradients to global L2 norm ``max_norm`` at most; under FSDP the norm of the
        shards is completed across processes first."""
        if self.mode != "fsdp":
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        norm = torch.nn.utils.get_total_norm(grads)
        if hasattr(norm, "full_tensor"):  # a DTensor: each process holds a part of the sum of squares
            norm = norm.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)

    def broadcast(self, obj: Any) -> Any:
        """Process 0's ``obj`` on every process (so decisions taken from it agree)."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def seed(self, seed: int, step: int) -> None:
        """Give processes other than 0 their own dropout masks (process 0 keeps the single-process RNG)."""
        if self.rank > 0:
            torch.manual_seed(seed * 1_000_003 + step * 7_919 + self.rank)

    # -- state -----------------------------------------------------------------------------
    def consolidated(self, model: nn.Module) -> nn.Module | None:
        """The model to save, on process 0 (None elsewhere): ``model`` itself, or under FSDP an
        unsharded CPU copy holding the gathered weights (a collective call: every process makes it)."""
        if self.mode != "fsdp":
            return model if self.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return None
        from torch.distributed.fsdp import FSDPModule

        cls = next(c for c in type(model).__mro__ if issubclass(c, PretrainedModel) and not issubclass(c, FSDPModule))
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            copy = cls(model.config)  # type: ignore[call-arg]
        copy.to_empty(device="cpu")  # the parameter objects stay, so tied weights stay tied
        try:
            load_state_strict(copy, full, "the gathered FSDP weights")
        except CheckpointError as e:  # a model changed after it was built (adapters): not rebuilt from its config
            raise ConfigError(f"train.execution.parallel=fsdp saves a {cls.__name__} rebuilt from its config, which this model "
                              f"no longer matches ({e}); use parallel=ddp") from None
        return copy

    def load_model_state(self, model: nn.Module, state: dict[str, torch.Tensor], load: Any) -> None:
        """Load a full (single-process) state dict into ``model``; ``load(model, state)`` is the plain loader."""
        if self.mode != "fsdp":
            load(model, state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        own = dict(model.named_parameters(remove_duplicate=False))
        for name, tied in own.items():  # a tied copy saved once: give it its twin's tensor
            if name not in state:
                first = next(n for n, p in own.items() if p is tied and n in state)
                state = {**state, name: state[first]}
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state in the single-process format (numbered parameters); gathered under FSDP."""
        if self.mode != "fsdp":
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.is_main:
            return {}
        index = {name: i for i, name in enumerate(n for g in full["param_groups"] for n in g["params"])}
        return {
            "state": {index[name]: s for name, s in full["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]],
        }

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Load an optimizer state in the single-process format (from any number of processes)."""
        if self.mode != "fsdp":
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = [n for g in optimizer.param_groups for n in _param_names(model, g["params"])]
        full = {
            "state": {names[i]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
        }
        set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))


def _param_names(model: nn.Module, params: list[nn.Parameter]) -> list[str]:
    """The first name of each parameter in ``params``, in order."""
    names: dict[int, str] = {}
    for name, p in model.named_parameters():
        names.setdefault(id(p), name)
    return [names[id(p)] for p in params]

