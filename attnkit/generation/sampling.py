"""Sampling from decoder-only language models over a fixed-size KV cache (gpt-fast style).

Decoding is split into two plain functions over pre-allocated ``(B, H, max_len, D)``
buffers (:class:`StaticKVCache`):

* :func:`prefill` runs the (left-padded) prompts once and fills cache slots ``0 .. T-1``;
* :func:`decode_one_token` runs one new token per row at cache slot ``slot`` (a 1-element
  tensor), attending to the whole buffer through a mask built from tensors only.

Every shape in :func:`decode_one_token` is fixed for a given batch and cache size and no
value goes back to Python, so it compiles once with ``torch.compile(mode="reduce-overhead")``
(CUDA graphs) and is replayed for every token. :func:`generate` drives them: greedy,
temperature, top-k and nucleus (top-p, Holtzman et al. 2020) sampling, a seed, EOS and stop
strings, batched prompts with left padding, and a per-token callback for streaming.

Context limit: a prompt longer than the model's context is an error; generation stops
when prompt + new tokens fill the context. A model with a sliding attention window
(``config.window``) sees only that many most recent cache slots at each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from attnkit.attention.cache import KVCache
from attnkit.attention.masks import additive_bias
from attnkit.errors import ConfigError
from attnkit.models.gpt import GPT


class StaticKVCache(KVCache):
    """``(B, H, max_len, D)`` key/value buffers written at the cache slots in ``self.slots``.

    Unlike :class:`KVCache` (which appends and returns a growing slice), :meth:`append`
    writes with ``index_copy_`` and returns the full buffers, so shapes never change;
    which slots may be attended is the caller's mask. It is driven by :func:`prefill` and
    :func:`decode_one_token` (``GPT.forward`` expects the growing :class:`KVCache`).
    """

    def __init__(self, batch: int, n_heads: int, max_len: int, head_dim: int, *, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__(max_len)
        self.k = torch.zeros(batch, n_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros(batch, n_heads, max_len, head_dim, dtype=dtype, device=device)
        for t in (self.k, self.v):  # fixed addresses: CUDA graphs may capture writes into them
            torch._dynamo.mark_static_address(t)
        self.slots = torch.arange(0, device=device)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write ``k, v: (B, H, T, D)`` at cache slots ``self.slots: (T,)``; return the full buffers."""
        self.k.index_copy_(2, self.slots, k.to(self.k.dtype))
        self.v.index_copy_(2, self.slots, v.to(self.v.dtype))
        return self.k, self.v  # (B, H, max_len, D)

    def reorder(self, index: Tensor) -> None:
        self.k.copy_(self.k.index_select(0, index))
        self.v.copy_(self.v.index_select(0, index))


def static_caches(model: GPT, batch: int, max_len: int) -> list[StaticKVCache]:
    """One :class:`StaticKVCache` per layer, in the model's dtype and device."""
    p = next(model.parameters())
    c = model.config
    heads = c.n_heads if getattr(c, "n_kv_heads", None) is None else c.n_kv_heads  # grouped-query attention caches fewer
    return [StaticKVCache(batch, heads, max_len, c.head_dim, dtype=p.dtype, device=p.device) for _ in range(c.n_layers)]


def prefill(model: GPT, ids: Tensor, pad: Tensor, caches: list[StaticKVCache]) -> Tensor:
    """Run left-padded prompts ``ids: (B, T)`` with ``pad: (B,)`` pad tokens each; fill slots 0..T-1.

    Returns:
        next-token logits ``(B, V)``.
    """
    t, max_len = ids.shape[1], caches[0].max_len
    slots = torch.arange(t, device=ids.device)  # (T,)
    for c in caches:
        c.slots = slots
    positions = (slots[None, :] - pad[:, None]).clamp(min=0)  # (B, T)
    keys = torch.arange(max_len, device=ids.device)  # (max_len,)
    mask = (keys[None, None, :] >= pad[:, None, None]) & (keys[None, None, :] <= slots[None, :, None])  # (B, T, max_len)
    window = getattr(model.config, "window", None)
    if window is not None:
        mask = mask & (slots[None, :, None] - keys[None, None, :] < window)
    return model.next_token_logits(ids, positions, mask[:, None], caches)  # type: ignore[arg-type]


def decode_one_token(model: GPT, token: Tensor, slot: Tensor, pad: Tensor, caches: list[StaticKVCache]) -> Tensor:
    """One decoding step: ``token: (B, 1)`` at cache slot ``slot: (1,)``; returns logits ``(B, V)``.

    Fixed shapes, no host synchronisation: compile it once and replay it.
    """
    for c in caches:
        c.slots = slot
    positions = (slot[None, :] - pad[:, None]).clamp(min=0)  # (B, 1)
    keys = torch.arange(caches[0].max_len, device=token.device)  # (max_len,)
    mask = (keys[None, :] >= pad[:, None]) & (keys[None, :] <= slot)  # (B, max_len)
    window = getattr(model.config, "window", None)
    if window is not None:
        mask = mask & (slot - keys[None, :] < window)
    if model.decoder.layers[0].self_attn.kernel.bias_as_mask:
        # The new token always sees its own slot, so no row is empty: a 0 / -inf bias built once
        # here serves every layer, without the per-layer empty-row guard of a boolean mask.
        bias = additive_bias(mask, caches[0].k.dtype)
        return model.next_token_logits(token, positions, None, caches, bias=bias[:, None, None, :])  # type: ignore[arg-type]
    return model.next_token_logits(token, positions, mask[:, None, None, :], caches)  # type: ignore[arg-type]


_COMPILED: dict[str, Callable[..., Tensor]] = {}
_REUSED: dict[str, tuple[tuple, list[StaticKVCache]]] = {}


def reused_static_caches(model: GPT, batch: int, max_len: int) -> list[StaticKVCache]:
    """:func:`static_caches`, but the same buffers again while model, batch and length match.

    The compiled decode step guards on the cache buffers' addresses (they are marked static
    for CUDA graphs), so fresh buffers on every :func:`generate` call would recompile it.
    Only the most recent set is kept. Stale contents are harmless: the mask hides every slot
    that was not written by the current call.
    """
    p = next(model.parameters())
    key = (id(model), batch, max_len, p.dtype, p.device)
    held = _REUSED.get("last")
    if held is None or held[0] != key:
        _REUSED.pop("last", None)  # free the old buffers before allocating new ones
        held = (key, static_caches(model, batch, max_len))
        _REUSED["last"] = held
    return held[1]


def decode_greedy_token(model: GPT, token: Tensor, slot: Tensor, pad: Tensor, caches: list[StaticKVCache]) -> Tensor:
    """:func:`decode_one_token` followed by the greedy choice: the next tokens ``(B, 1)``.

    Compiled, the argmax over the vocabulary runs inside the same graph instead of as a
    separate eager kernel after it.
    """
    return decode_one_token(model, token, slot, pad, caches).argmax(-1, keepdim=True)  # (B, 1)


BLOCK = 8  # greedy steps per compiled call when the host needs no token before the end


def decode_greedy_block(model: GPT, token: Tensor, slots: Tensor, pad: Tensor, caches: list[StaticKVCache]) -> Tensor:
    """``len(slots)`` greedy steps in one call: ``token: (B, 1)``, ``slots: (n,)``; returns ``(B, n)``.

    Compiled, the steps are one CUDA graph: the host launches one replay per ``n`` tokens, and
    the GPU does not wait between steps for the host to launch the next replay.
    """
    outs = []
    for i in range(slots.shape[0]):
        token = decode_greedy_token(model, token, slots[i : i + 1], pad, caches)  # (B, 1)
        outs.append(token)
    return torch.cat(outs, dim=1)


def compiled_decode_greedy_block(mode: str = "reduce-overhead") -> Callable[..., Tensor]:
    """:func:`decode_greedy_block` under ``torch.compile(mode=mode, fullgraph=True)``, built once per mode."""
    _check_mode(mode)
    key = f"{mode}/block"
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(decode_greedy_block, mode=mode, fullgraph=True)
    return _COMPILED[key]


def _check_mode(mode: str) -> None:
    if mode not in ("reduce-overhead", "max-autotune"):
        raise ValueError(f"compile mode {mode!r} is not 'reduce-overhead' or 'max-autotune'")


def compiled_decode_one_token(mode: str = "reduce-overhead", *, greedy: bool = False) -> Callable[..., Tensor]:
    """:func:`decode_one_token` (or :func:`decode_greedy_token`) under ``torch.compile(mode=mode,
    fullgraph=True)``, built once per mode.

    ``"reduce-overhead"`` replays the step as a CUDA graph; ``"max-autotune"`` also benchmarks
    Triton matmul kernels for the one-row matrix products (a longer first call).
    """
    _check_mode(mode)
    key = f"{mode}{'/greedy' if greedy else ''}"
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(decode_greedy_token if greedy else decode_one_token, mode=mode, fullgraph=True)
    return _COMPILED[key]


# -- choosing the next token ---------------------------------------------------------------
def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set logits outside the top-k and outside the smallest top-p nucleus to -inf. ``logits: (B, V)``."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)  # (B, V)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = probs.cumsum(-1) - probs  # mass of the better tokens; the first always stays
        drop_sorted = before >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def choose(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None) -> Tensor:
    """Next tokens ``(B,)``: argmax when ``temperature == 0``, else a sample from the filtered softmax."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float() / temperature, top_k, top_p), dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick tokens. ``temperature=0`` is greedy; ``top_p`` must be in (0, 1].

    ``repetition_penalty`` (> 1 discourages tokens already in the prompt or output) and
    ``no_repeat_ngram_size`` (n > 0 forbids repeating an n-gram) adjust the logits first
    (:mod:`attnkit.generation.processors`); they read the tokens on the host at every step.
    """

    max_new_tokens: int = 100
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    eos_id: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        """Refuse values no sampler can use (a :class:`~attnkit.errors.ConfigError`, a ``ValueError``, naming the field)."""
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ConfigError(f"temperature={self.temperature} must be a finite number >= 0 (0 = greedy)")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k={self.top_k} must be >= 1")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:  # also refuses nan
            raise ConfigError(f"top_p={self.top_p} must be in (0, 1]")
        if not (math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0):
            raise ConfigError(f"repetition_penalty={self.repetition_penalty} must be a positive number (1 = none)")
        if self.no_repeat_ngram_size < 0:
            raise ConfigError(f"no_repeat_ngram_size={self.no_repeat_ngram_size} must be >= 0 (0 = none)")

    @property
    def adjusts(self) -> bool:
        """True when the logits are adjusted against repetition (:mod:`attnkit.generation.processors`)."""
        return self.repetition_penalty != 1.0 or self.no_repeat_ngram_size > 0


@dataclass
class Generation:
    """New tokens per prompt (stopped rows cut after EOS / before a stop string) and their text."""

    tokens: list[list[int]]
    texts: list[str] | None = None


@torch.no_grad()
def generate(
    model: GPT,
    prompts: list[list[int]],
    config: SamplingConfig = SamplingConfig(),
    *,
    decode: Callable[[list[int]], str] | None = None,
    on_token: Callable[[int, Tensor], None] | None = None,
    compile: bool | str = False,
    block: int | None = None,
) -> Generation:
    """Continue each prompt (a list of token ids); prompts of different lengths are left-padded.

    Args:
        decode: ids -> text; needed for ``config.stop`` and to fill ``Generation.texts``.
        on_token: called as ``on_token(step, tokens (B,))`` after each new token (streaming).
        compile: compile the decode step with ``torch.compile(mode="reduce-overhead")`` (``True``)
            or the mode given (see :func:`compiled_decode_one_token`).
        block: greedy steps per compiled call (:func:`decode_greedy_block`) when no token is
            needed on the host before the end (no EOS, stop strings or ``on_token``); default
            :data:`BLOCK` when compiling, else 1 (one step per call).
    """
    block = (BLOCK if compile else 1) if block is None else block
    if isinstance(block, bool) or not isinstance(block, int) or block < 1:
        raise ValueError(f"block={block!r} must be a positive number of decoding steps")
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if config.stop and decode is None:
        raise ValueError("stop strings need a decode function (ids -> text)")
    context = model.config.context
    longest = max(len(p) for p in prompts)
    if longest > context:
        raise ValueError(f"a prompt of {longest} tokens is longer than the model's context of {context}; shorten it")
    n_new = min(config.max_new_tokens, context - longest)
    device = next(model.parameters()).device
    b = len(prompts)
    ids = torch.zeros(b, longest, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, longest - len(p) :] = torch.tensor(p, dtype=torch.long)
    ids = ids.to(device)
    pad = torch.tensor([longest - len(p) for p in prompts], device=device)  # (B,)
    generator = None
    if config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)
    was_training = model.training
    model.eval()
    greedy = False
    first: Callable[[], Tensor]
    advance: Callable[[Tensor, int], Tensor]
    if getattr(model, "recurrent", False):
        # Linear attention decodes as an RNN: a fixed-size state per layer, eager (``compile`` is
        # for the KV-cache step); positions count each row's real tokens.
        states = model.new_caches()
        keep = torch.arange(longest, device=device)[None, :] >= pad[:, None]  # (B, T)
        real = longest - pad  # (B,) prompt tokens per row

        def first() -> Tensor:
            return model(ids, attention_mask=keep, caches=states).logits[:, -1]  # (B, V)

        def advance(token: Tensor, step: int) -> Tensor:
            return model(token[:, None], positions=(real + step)[:, None], caches=states).logits[:, -1]
    else:
        if compile:  # a fixed buffer size (a multiple of 64) and fixed buffers: no recompilation per call
            caches = reused_static_caches(model, b, min(context, -(-(longest + n_new) // 64) * 64))
        else:
            caches = static_caches(model, b, longest + n_new)
        mode = compile if isinstance(compile, str) else "reduce-overhead"
        greedy = bool(compile) and config.temperature == 0 and not config.adjusts  # the argmax runs inside the compiled step
        step_fn = compiled_decode_one_token(mode, greedy=greedy) if compile else decode_one_token
        slots = torch.arange(longest, longest + n_new, device=device)  # (n_new,) cache slot of each new token

        def first() -> Tensor:
            return prefill(model, ids, pad, caches)

        def advance(token: Tensor, step: int) -> Tensor:
            return step_fn(model, token[:, None], slots[step : step + 1], pad, caches)
    # Without EOS, stop strings or a callback nothing needs the tokens on the host before the end,
    # so the host never waits for the device and queues decode steps ahead of it.
    per_step = on_token is not None or config.eos_id is not None or bool(config.stop) or config.adjusts
    seen = [list(p) for p in prompts]  # each row's tokens so far, for the repetition adjustments

    def pick(logits: Tensor) -> Tensor:
        if config.adjusts:
            from attnkit.generation.processors import no_repeat_ngram, repetition_penalty

            logits = no_repeat_ngram(repetition_penalty(logits, seen, config.repetition_penalty), seen, config.no_repeat_ngram_size)
        token = choose(logits, config.temperature, config.top_k, config.top_p, generator)
        if config.adjusts:
            for row, t in zip(seen, token.tolist()):
                row.append(t)
        return token
    out: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    queued: list[Tensor] = []
    try:
        # The caches hold the weights' dtype; autocast would hand the kernel bf16 queries against them.
        with torch.autocast(device.type, enabled=False):
            token = pick(first())  # (B,)
            if greedy and not per_step and block > 1:
                out = _greedy_blocks(model, token, slots, pad, caches, n_new, block, mode, step_fn)
            else:
                for step in range(n_new):
                    if per_step:
                        if on_token is not None:
                            on_token(step, token)
                        _record(token.tolist(), out, done, config, decode)
                        if all(done):
                            break
                    else:
                        queued.append(token)
                    if step == n_new - 1:
                        break
                    nxt = advance(token, step)
                    # A CUDA-graph step returns its output buffer, which the next replay overwrites: copy it.
                    token = nxt[:, 0].clone() if greedy else pick(nxt)
        if queued:
            out = torch.stack(queued, dim=1).tolist()  # (B, n_new): the one host sync
    finally:
        model.train(was_training)
    texts = None
    if decode is not None:
        texts = [cut_at_stop(decode(t), config.stop) for t in out]
    return Generation(tokens=out, texts=texts)


def _greedy_blocks(model: GPT, token: Tensor, slots: Tensor, pad: Tensor, caches: list[StaticKVCache], n_new: int,
                   block: int, mode: str, step_fn: Callable[..., Tensor]) -> list[list[int]]:
    """Greedy tokens after the first (``token: (B,)``): ``block`` compiled steps per call, then
    single steps for the rest; one host sync at the end."""
    block_fn = compiled_decode_greedy_block(mode)
    queued, step = [token[:, None]], 0

    def last() -> Tensor:  # the newest token, (B, 1), with one layout whatever produced it (no recompilation)
        return queued[-1][:, -1:].contiguous()

    while step + block <= n_new - 1:
        # A CUDA-graph call returns its output buffer, which the next replay overwrites: copy it.
        queued.append(block_fn(model, last(), slots[step : step + block], pad, caches).clone())  # (B, block)
        step += block
    while step < n_new - 1:
        queued.append(step_fn(model, last(), slots[step : step + 1], pad, caches).clone())  # (B, 1)
        step += 1
    return torch.cat(queued, dim=1)[:, :n_new].tolist()


def _record(tokens: list[int], out: list[list[int]], done: list[bool], config: SamplingConfig, decode: Callable[[list[int]], str] | None) -> None:
    """Append each running row's new token; stop rows at EOS (not kept) or once their text holds a stop string."""
    for i, t in enumerate(tokens):
        if done[i]:
            continue
        if config.eos_id is not None and t == config.eos_id:
            done[i] = True
            continue
        out[i].append(t)
        if config.stop and decode is not None and any(s in decode(out[i]) for s in config.stop):
            done[i] = True


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]
