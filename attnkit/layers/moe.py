"""A mixture-of-experts feed-forward layer with top-1 routing: the Switch Transformer (Fedus et al. 2022, section 2.1-2.2).

A router ``W_r`` gives each token ``x`` a distribution over ``N`` experts, ``p(x) = softmax(W_r x)``
(eq. 1); the token goes to its one best expert ``i = argmax p(x)`` and the layer's output is that
expert's FFN scaled by its gate, ``y = p_i(x) E_i(x)`` (eq. 2), so the router learns through the gate.
With ``top_k=2`` (GShard, Lepikhin et al. 2021, algorithm 1) the token goes to its two best experts,
``y = g_1 E_1(x) + g_2 E_2(x)`` with the two probabilities renormalised to sum to 1, and every first
choice takes its place in an expert's queue before any second choice; the auxiliary losses count the
first choice.
Each expert takes at most ``capacity = ceil(capacity_factor * tokens / N)`` tokens (eq. 3); tokens past
that, in the order of the batch, are *dropped*: the layer outputs 0 for them, so they pass to the next
layer through the residual connection only. The router runs in float32 (section 2.4, selective
precision; autocast is off for it) and may multiply its input by uniform noise in ``[1 - jitter, 1 + jitter]``
while training.

Padding: the model marks the real tokens (:func:`mark_padding`), which are the only ones routed,
counted for capacity and counted in the auxiliary losses (:mod:`attnkit.objectives.moe`); padding
positions output 0. Each forward keeps its router logits for those losses (``router_logits``, their softmax
``router_probs``, the first choices per expert ``first_choices`` of a top-1 layer, and ``keep_used``, None when every
token is real) and, in training mode, the losses themselves (``router_loss_values``: computed in the layer, they are
part of its graph under ``torch.compile``) and adds the tokens routed to and dropped by each expert to ``load``
and ``dropped`` (read and reset by :func:`expert_load`).

Dispatch (``MoEConfig.dispatch``): ``capacity`` gathers each accepted choice into its expert's row of an
``(N, C, d)`` buffer (rows no choice fills hold zeros) and runs the experts as batched products over every row;
``grouped`` sorts the choices by expert and runs each expert on its own rows only, as one grouped matrix
product per linear map (``torch._grouped_mm``), over all routed choices, the dropped ones too, whose outputs
the zero gate then removes: the same outputs and gradients with ``k M`` rows of work instead of
``N C``. It applies to bfloat16 experts' inputs (autocast's) where the grouped product runs (probed once
per device type) and both widths are multiples of 8; elsewhere the layer takes the buffer. Every move of rows
between token order and expert order is a gather both ways (:func:`attnkit.attention.gather.gather_rows`): no row
receives two, so the backward pass gathers the gradient back instead of adding it into place.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnkit.attention.gather import gather_rows, inverse_index
from attnkit.config import Config, check
from attnkit.layers.ffn import activation
from attnkit.objectives.moe import load_balancing_loss, router_losses, router_z_loss


@dataclass(frozen=True, kw_only=True)
class MoEConfig(Config):
    """The Switch layer's settings (section 2; appendix: alpha 0.01; ST-MoE: z-loss 1e-3).

    ``n_experts`` experts, each an FFN of the model's ``d_ff``; ``top_k`` experts per token (1: Switch; 2:
    GShard's top-2, Lepikhin et al. 2021); ``capacity_factor`` of the even share of tokens per expert (1.25
    in most of the Switch paper's runs); ``aux_loss`` alpha of the load-balancing loss;
    ``z_loss`` the router z-loss coefficient; ``jitter`` the router's input noise while training (0: none);
    ``dispatch`` how the choices reach their experts (``capacity`` or ``grouped``; module docstring).
    """

    n_experts: int = 8
    top_k: int = 1
    capacity_factor: float = 1.25
    aux_loss: float = 0.01
    z_loss: float = 1e-3
    jitter: float = 0.0
    dispatch: str = "capacity"

    def validate(self) -> None:
        check(self.n_experts >= 1, "moe.n_experts", self.n_experts, "must be at least 1")
        check(self.top_k in (1, 2) and self.top_k <= self.n_experts, "moe.top_k", self.top_k, "must be 1 or 2, at most n_experts")
        check(self.capacity_factor > 0, "moe.capacity_factor", self.capacity_factor, "must be positive")
        check(self.aux_loss >= 0, "moe.aux_loss", self.aux_loss, "must be >= 0")
        check(self.z_loss >= 0, "moe.z_loss", self.z_loss, "must be >= 0")
        check(0.0 <= self.jitter < 1.0, "moe.jitter", self.jitter, "must be in [0, 1)")
        check(self.dispatch in ("capacity", "grouped"), "moe.dispatch", self.dispatch, "must be capacity or grouped")


class ExpertLinear(nn.Module):
    """``n_experts`` linear maps ``d_in -> d_out`` stacked in one tensor, applied to each expert's slots at once.

    ``weight`` is ``(n_experts, d_in, d_out)`` and ``bias`` ``(n_experts, d_out)``, so expert ``i`` maps ``x`` to
    ``x @ weight[i] + bias[i]``: ``weight[i]`` is the transposed weight of an ``nn.Linear(d_in, d_out)``, and it
    starts as that layer does (uniform in ``+-1/sqrt(d_in)``); model initialisers treat each slice as one Linear.

    Args:
        n_experts: number of experts.
        d_in: input width.
        d_out: output width.
        bias: whether each expert has a bias.
    """

    def __init__(self, n_experts: int, d_in: int, d_out: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = d_in, d_out
        self.weight = nn.Parameter(torch.empty(n_experts, d_in, d_out))
        self.bias = nn.Parameter(torch.empty(n_experts, d_out)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.in_features) if self.in_features else 0.0
        nn.init.uniform_(self.weight, -bound, bound)  # nn.Linear's default: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (n_experts, C, d_in)`` -> ``(n_experts, C, d_out)``, slot rows of expert i through expert i's map.

        The bias is added after the product, not as ``baddbmm``'s input: that one is broadcast to the whole output
        first, a copy as large as the output, where a separate addition fuses into the next elementwise kernel
        under ``torch.compile`` (the activation after ``w1``)."""
        y = torch.bmm(x, self.weight)  # (N, C, d_out)
        return y if self.bias is None else y + self.bias[:, None, :].to(y.dtype)

    def grouped(self, x: Tensor, offsets: Tensor, expert: Tensor) -> Tensor:
        """``x: (M, d_in)`` rows sorted by expert, ``offsets: (N,)`` int32 end of each expert's rows, ``expert: (M,)``
        each row's expert -> ``(M, d_out)``: one grouped product; the bias added through a one-hot product, whose
        backward sums each expert's rows without atomic additions into N rows."""
        y = torch._grouped_mm(x, self.weight.to(x.dtype), offs=offsets)  # (M, d_out)
        if self.bias is None:
            return y
        one_hot = (expert[:, None] == torch.arange(self.weight.shape[0], device=x.device)).to(y.dtype)  # (M, N)
        return y + one_hot @ self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"experts={self.weight.shape[0]}, in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class SwitchFFN(nn.Module):
    """Top-1 (or top-2) mixture of ``n_experts`` position-wise FFNs with a capacity limit (Switch Transformer, eq. 1-3).

    The experts are one FFN with stacked weights (``w1``: ``(N, d_model, d_ff)``, ``w2``: ``(N, d_ff, d_model)``,
    :class:`ExpertLinear`). Dispatch has fixed shapes: each routed token's 1-based place in its expert's queue is a
    cumulative sum over the one-hot choices (every first choice in token order, then every second choice;
    :func:`queue_places`); accepted tokens are gathered into an ``(N, C, d_model)`` buffer (``C`` the capacity
    for a batch without padding; dropped tokens take no slot; under autocast the buffer has the autocast dtype that
    the experts' matrix products use), the experts run as two batched matrix products, and each token sums its
    accepted slots' outputs times their gates.
    Nothing is read on the host, so the layer runs under ``torch.compile`` and CUDA graphs.

    State dicts holding one ``FeedForward`` per expert (``experts.{i}.w1.weight`` ...) load into the stacked weights.

    Args:
        d_model: model width.
        d_ff: each expert's hidden width.
        activation_name: the experts' activation.
        dropout: dropout on the experts' hidden layer.
        bias: whether the experts' linear layers have biases (the router has none).
        config: experts, capacity and router settings.
    """

    def __init__(self, d_model: int, d_ff: int, activation_name: str = "relu", dropout: float = 0.0, bias: bool = True,
                 config: MoEConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or MoEConfig()
        self.n_experts = c.n_experts
        self.capacity_factor = c.capacity_factor
        self.router = nn.Linear(d_model, c.n_experts, bias=False)
        self.w1 = ExpertLinear(c.n_experts, d_model, d_ff, bias)
        self.w2 = ExpertLinear(c.n_experts, d_ff, d_model, bias)
        self.activation_name = activation_name
        self.act = activation(activation_name)
        self.dropout = nn.Dropout(dropout)
        self.keep: Tensor | None = None  # (B, T) True = a real token; set by mark_padding's hooks
        self.router_logits: Tensor | None = None  # (B, T, N) of the last forward
        self.router_probs: Tensor | None = None  # (B, T, N) their softmax
        self.first_choices: Tensor | None = None  # (N,) first choices per expert (top-1 layers)
        self.router_loss_values: tuple[Tensor, Tensor] | None = None  # (balance, z) of the last training forward
        self.register_buffer("load", torch.zeros(c.n_experts), persistent=False)
        self.register_buffer("dropped", torch.zeros(c.n_experts), persistent=False)
        self.register_load_state_dict_pre_hook(_stack_expert_keys)

    def capacity(self, n_tokens: int) -> int:
        """Tokens each expert takes: ``ceil(capacity_factor * top_k * n_tokens / n_experts)`` (eq. 3)."""
        return math.ceil(self.capacity_factor * self.config.top_k * n_tokens / self.n_experts)

    def run_experts(self, h: Tensor) -> Tensor:
        """Every expert's FFN on its slots: ``h: (N, C, d_model)`` -> ``(N, C, d_model)``."""
        h = self.act(self.w1(h))  # (N, C, d_ff)
        return self.w2(self.dropout(h) if self.training else h)  # (N, C, d_model)

    def _groups(self, tokens: Tensor) -> bool:
        """Whether the grouped dispatch runs for ``tokens``: bfloat16 (the grouped product's dtype; under autocast the
        experts' inputs are), the product present on their device, and rows of both widths multiples of 16 bytes."""
        widths = tokens.shape[-1] % 8 == 0 and self.w1.out_features % 8 == 0
        return tokens.dtype == torch.bfloat16 and widths and grouped_mm_runs(tokens.device.type, tokens.dtype)

    def run_grouped(self, tokens: Tensor, expert: Tensor) -> Tensor:
        """Every choice through its expert's FFN, ``tokens: (kM, d)`` with ``expert: (kM,)`` -> ``(kM, d)``: the choices
        sorted by expert (stable), each expert's rows through one grouped product per linear map, the rows put back."""
        order = torch.argsort(expert, stable=True)  # (kM,) the choice in each sorted row
        place = inverse_index(order, order.shape[0])  # (kM,) each choice's sorted row
        chosen = expert[None, :] == torch.arange(self.n_experts, device=expert.device)[:, None]  # (N, kM)
        offsets = torch.cumsum(chosen.sum(-1), 0).to(torch.int32)  # (N,) end of each expert's rows
        sorted_expert = expert.index_select(0, order)
        h = self.act(self.w1.grouped(gather_rows(tokens, order, place), offsets, sorted_expert))  # (kM, d_ff)
        y = self.w2.grouped(self.dropout(h) if self.training else h, offsets, sorted_expert)  # (kM, d)
        return gather_rows(y, place, order)  # choice order

    def expert(self, i: int, x: Tensor) -> Tensor:
        """Expert ``i``'s FFN alone on ``x: (..., d_model)`` (a reference for tests and inspection)."""
        w1, w2 = self.w1, self.w2
        h = self.act(F.linear(x, w1.weight[i].t(), None if w1.bias is None else w1.bias[i]))  # (..., d_ff)
        h = self.dropout(h) if self.training else h
        return F.linear(h, w2.weight[i].t(), None if w2.bias is None else w2.bias[i])  # (..., d_model)

    def forward(self, x: Tensor) -> Tensor:
        """``x: (B, T, d_model)`` -> ``(B, T, d_model)``; dropped and padding tokens give 0."""
        n, k = self.n_experts, self.config.top_k
        keep = self.keep if self.keep is not None and self.keep.shape == x.shape[:-1] else None  # None: every token is real
        logits = self.route(x)  # (B, T, N) in float32
        probs = torch.softmax(logits, dim=-1)  # (B, T, N)
        self.router_logits, self.router_probs, self.keep_used = logits, probs, keep
        top_p, top_e = probs.topk(k, dim=-1)  # (B, T, k)
        gates = top_p if k == 1 else top_p / top_p.sum(-1, keepdim=True)  # top-2: the two gates renormalised
        m, d = x.shape[:-1].numel(), x.shape[-1]
        # choice-major order: every token's first choice, in token order, then every second choice (GShard)
        expert = top_e.reshape(m, k).t().reshape(k * m)  # (kM,)
        slots = min(self.capacity(m), m)  # the buffer's places per expert: the capacity of a batch without padding
        real: Tensor | None = None
        capacity: Tensor | int = slots
        if keep is not None:
            real = keep.reshape(m) if k == 1 else keep.reshape(m).repeat(k)  # (kM,)
            n_real = keep.sum().to(torch.float64)  # on the device: no host read
            capacity = torch.ceil(n_real * (self.capacity_factor * k) / n).clamp(max=slots)  # eq. 3 on the real tokens
        place, routed = queue_places(expert, n, real)  # (kM,) 1-based place in its expert's queue; (N,) choices per expert
        self.first_choices = routed if k == 1 else None  # (N,) real tokens whose first choice each expert is
        # training: the router losses of this forward, computed here so that they join the layer's compiled graph
        self.router_loss_values = None
        if self.training and torch.is_grad_enabled():
            self.router_loss_values = (router_losses(logits, probs, routed, keep) if k == 1
                                       else (load_balancing_loss(logits, keep), router_z_loss(logits, keep)))
        accepted = place <= capacity if real is None else real & (place <= capacity)  # (kM,)
        tokens = x.reshape(m, d) if k == 1 else x.reshape(m, d).repeat(k, 1)  # (kM, d)
        kind = x.device.type
        if tokens.dtype == torch.float32 and autocast_available(kind) and torch.is_autocast_enabled(kind):
            tokens = tokens.to(torch.get_autocast_dtype(kind))  # the dtype the experts' matmuls cast to
        scale = torch.where(accepted, gates.reshape(m, k).t().reshape(k * m), 0.0)  # (kM,) dropped and padding: 0
        if self.config.dispatch == "grouped" and self._groups(tokens):
            out = self.run_grouped(tokens, expert) * scale[:, None].to(x.dtype)  # (kM, d)
        else:
            # each accepted choice's row of the (N C, d) buffer; the others take none (row N C: nowhere)
            row = torch.where(accepted, expert * slots + place.long() - 1, n * slots)  # (kM,)
            source = inverse_index(row, n * slots)  # (N C,) the choice in each row, kM where none
            buffer = gather_rows(tokens, source, row, True)  # (N C, d), empty rows zero
            y = self.run_experts(buffer.view(n, slots, d)).reshape(n * slots, d)  # (N C, d)
            out = gather_rows(y, row, source, True) * scale[:, None].to(x.dtype)  # (kM, d); dropped and padding rows zero
        if self.training:
            with torch.no_grad():
                self.load += routed
                self.dropped += (routed - capacity).clamp(min=0)  # places run 1..routed; those past capacity drop
        out = out if k == 1 else out.view(k, m, d).sum(0)  # (M, d)
        return out.reshape(x.shape)

    def route(self, x: Tensor) -> Tensor:
        """The router's logits ``W_r x`` in float32 (section 2.4), with the input jitter while training: ``(..., N)``."""
        kind = x.device.type
        with torch.autocast(kind, enabled=False) if autocast_available(kind) else nullcontext():  # not in bf16/fp16
            h = x.float()
            if self.training and self.config.jitter > 0:
                h = h * torch.empty_like(h).uniform_(1 - self.config.jitter, 1 + self.config.jitter)
            return F.linear(h, self.router.weight.float())  # (..., N)

    def extra_repr(self) -> str:
        return f"experts={self.n_experts}, top_k={self.config.top_k}, capacity_factor={self.capacity_factor}, activation={self.activation_name}"


@torch.compiler.assume_constant_result
def autocast_available(device_type: str) -> bool:
    """Whether autocast exists for ``device_type``; a constant to ``torch.compile``, which cannot trace the builtin
    behind ``torch.amp.is_autocast_available`` in every PyTorch release (a graph break in each Switch layer)."""
    return torch.amp.is_autocast_available(device_type)


_GROUPED_MM: dict[tuple[str, torch.dtype], bool] = {}


@torch.compiler.assume_constant_result
def grouped_mm_runs(device_type: str, dtype: torch.dtype) -> bool:
    """Whether ``torch._grouped_mm`` runs on this device type and dtype, with its backward (one small trial, once per
    pair; older PyTorch, other cards and dtypes do not have it)."""
    key = (device_type, dtype)
    if key not in _GROUPED_MM:
        ok = hasattr(torch, "_grouped_mm")
        if ok:
            try:
                with torch.inference_mode(False), torch.enable_grad(), (
                        torch.autocast(device_type, enabled=False) if autocast_available(device_type) else nullcontext()):
                    x = torch.ones(4, 8, device=device_type, dtype=dtype, requires_grad=True)
                    w = torch.ones(2, 8, 8, device=device_type, dtype=dtype, requires_grad=True)
                    y = torch._grouped_mm(x, w, offs=torch.tensor([1, 4], device=device_type, dtype=torch.int32))
                    y.backward(torch.ones_like(y))
                    ok = bool((y == 8).all()) and x.grad is not None and w.grad is not None
            except (RuntimeError, TypeError, NotImplementedError):
                ok = False
        _GROUPED_MM[key] = ok
    return _GROUPED_MM[key]


def queue_places(expert: Tensor, n_experts: int, real: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Each choice's 1-based place in its expert's queue, in the order given, and the number of choices per expert.

    The one-hot choices are laid out expert-major, ``(N, K)`` for ``K`` choices, and counted by one cumulative
    sum over the flattened ``N K`` values; a choice's place is the count up to it in its expert's row less the
    count of the rows before. On a GPU a one-dimensional scan runs in parallel, whereas a cumulative sum down the
    ``K`` rows of a ``(K, N)`` one-hot runs as ``N`` threads each looping over ``K`` rows in turn.

    Args:
        expert: ``(K,)`` the chosen expert of each choice.
        n_experts: ``N``.
        real: ``(K,)`` True for the choices that queue (a real token's), None for all; the others take no place.

    Returns:
        ``(K,)`` int32 places (meaningless where ``real`` is False) and ``(N,)`` int32 queued choices per expert.
    """
    chosen = torch.arange(n_experts, device=expert.device)[:, None] == expert[None, :]  # (N, K)
    if real is not None:
        chosen = chosen & real[None, :]
    count = torch.cumsum(chosen.view(-1), 0, dtype=torch.int32).view(chosen.shape)  # (N, K): one scan over the flat array
    routed = chosen.sum(-1, dtype=torch.int32)  # (N,)
    before = count[:, -1] - routed  # (N,) choices queued at experts 0..i-1
    place = (count - before[:, None]).gather(0, expert[None, :])[0]  # (K,)
    return place, routed


def _stack_expert_keys(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Rewrite ``experts.{i}.w{1,2}.{weight,bias}`` (one FeedForward per expert) as the stacked ``w{1,2}.{weight,bias}``."""
    n = getattr(module, "n_experts", 0)
    for name in ("w1.weight", "w1.bias", "w2.weight", "w2.bias"):
        keys = [f"{prefix}experts.{i}.{name}" for i in range(n)]
        if keys and all(key in state_dict for key in keys):
            tensors = [state_dict.pop(key) for key in keys]
            state_dict[prefix + name] = torch.stack([t.t() if t.dim() == 2 else t for t in tensors])  # Linear's (out, in) -> (in, out)


def switch_layers(model: nn.Module) -> list[SwitchFFN]:
    """Every :class:`SwitchFFN` inside ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, SwitchFFN)]


def mark_padding(model: nn.Module) -> None:
    """Hook ``model``'s token embeddings so that each stack's Switch layers know its real tokens (``ids != pad_id``).

    The encoder-decoder marks its encoder from the source ids and its decoder from the target ids; an
    encoder (BERT family) or decoder-only model marks every layer from its input ids. A model without
    ``pad_id`` marks nothing (every token counts). Calling it again does nothing.
    """
    if getattr(model, "_moe_marked", False):
        return
    config: Any = getattr(model, "config", None)
    config = getattr(config, "encoder", None) or getattr(config, "discriminator", None) or config
    pad = getattr(config, "pad_id", None)
    if pad is None:
        return

    def hook(layers: list[SwitchFFN]) -> Any:
        def set_keep(_module: nn.Module, args: tuple[Any, ...]) -> None:
            if args and isinstance(args[0], Tensor) and not args[0].is_floating_point():
                for layer in layers:
                    layer.keep = args[0] != pad
        return set_keep

    pairs: list[tuple[nn.Module, nn.Module]] = []
    if hasattr(model, "src_embed") and hasattr(model, "encoder") and hasattr(model, "decoder"):
        pairs = [(model.src_embed, model.encoder), (model.tgt_embed, model.decoder)]  # type: ignore[list-item]
    else:
        embed = next((m for name, m in model.named_modules() if name.endswith(("embed", "tok_embed"))), None)
        if embed is not None:
            pairs = [(embed, model)]
    for embed, stack in pairs:
        embed.register_forward_pre_hook(hook(switch_layers(stack)))
    model._moe_marked = True  # type: ignore[assignment]


def expert_load(model: nn.Module, reset: bool = True) -> dict[str, float]:
    """The expert load since the last call: routed shares and dropped fraction, over every Switch layer.

    Returns:
        ``moe_load_cv`` (coefficient of variation of the tokens routed per expert, per layer, averaged over layers;
        0 is perfect balance), ``moe_dropped`` (fraction of routed tokens dropped for capacity) and
        ``moe_max_load`` (the largest share of one expert, averaged over layers); empty without Switch layers or tokens.
    """
    layers = [m for m in switch_layers(model) if m.load.sum() > 0]
    if not layers:
        return {}
    cvs, maxes, dropped, routed = [], [], 0.0, 0.0
    for m in layers:
        load = m.load / m.load.sum()
        cvs.append(float(load.std(unbiased=False) / load.mean()))
        maxes.append(float(load.max()))
        dropped += float(m.dropped.sum())
        routed += float(m.load.sum())
        if reset:
            m.load.zero_()
            m.dropped.zero_()
    return {"moe_load_cv": sum(cvs) / len(cvs), "moe_max_load": sum(maxes) / len(maxes), "moe_dropped": dropped / max(routed, 1.0)}
