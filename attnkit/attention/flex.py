"""The GPU fast path of the sparse patterns: FlexAttention with block masks built once and cached.

``torch.nn.attention.flex_attention`` (PyTorch >= 2.5) compiles the pattern's predicate into
a block-sparse Triton kernel that skips the blocks the mask rules out entirely. The block
mask depends only on the pattern and the shape, so it is built once per
``(pattern, Tq, Tk, heads, device)`` and kept. Imports are guarded: on CPU-only builds, or
where FlexAttention is missing, :func:`available` is False and callers use the chunked path.

Compilation: dynamo specialises the compiled function to each shape, pattern, ``score_mod`` constant
and grad mode, one variant each, and past ``torch._dynamo.config.recompile_limit`` (8 by default) it
would run eager FlexAttention, which materialises the full score matrix. :class:`CompiledFlex` keeps
one compiled function per grad mode, each on its own code object (where dynamo stores its variants and
counts them), allows each :data:`RECOMPILE_LIMIT` variants (or the global limit, if higher), and compiles
with ``fullgraph=True``, so that a call past the limit raises an error naming the limit instead of
falling back. Workloads with many distinct lengths should pad lengths to a few buckets.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from types import FunctionType
from typing import Any, Callable

import torch
from torch import Tensor

from attnkit.attention import graphed
from attnkit.attention.patterns import Pattern

try:  # PyTorch >= 2.5
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - old PyTorch
    create_block_mask = flex_attention = None  # type: ignore[assignment]
try:  # PyTorch >= 2.9
    from torch.nn.attention.flex_attention import AuxRequest
except ImportError:  # pragma: no cover - old PyTorch
    AuxRequest = None  # type: ignore[assignment,misc]
try:
    from torch._dynamo.exc import FailOnRecompileLimitHit
except ImportError:  # pragma: no cover - old PyTorch
    FailOnRecompileLimitHit = RuntimeError  # type: ignore[assignment,misc]

MIN_QUERIES = 128  # fewer queries (decoding steps) fill less than one tile: the chunked path is better
RECOMPILE_LIMIT = 64  # variants each compiled FlexAttention function may hold (see CompiledFlex)
_COMPILED: dict[tuple[bool, str], "CompiledFlex"] = {}
_MASKS: OrderedDict[tuple, Any] = OrderedDict()
_MAX_MASKS = 32


def available(q: Tensor) -> bool:
    """Whether FlexAttention can run on ``q``'s device (CUDA, a head dim Triton handles)."""
    d = q.shape[-1]
    return flex_attention is not None and q.is_cuda and d >= 16 and d & (d - 1) == 0


def block_mask(
    pattern: Pattern, key: tuple, tq: int, tk: int, device: torch.device, tiles: tuple[int, int] | None = None
) -> Any:
    """The cached FlexAttention block mask of ``pattern`` for ``Tq`` queries over ``Tk`` keys.

    ``tiles``: the (query, key) block size of the mask; FlexAttention's default (128, 128) if None.
    """

    def build() -> Any:
        keep = pattern.mask_fn(tq, tk, device)
        n_heads = pattern.n_heads if pattern.per_head else None
        return create_block_mask(lambda b, h, qr, kr: keep(h, qr, kr), B=None, H=n_heads, Q_LEN=tq, KV_LEN=tk,
                                 device=device, **({"BLOCK_SIZE": tiles} if tiles else {}))

    return cached((key, tiles), tq, tk, device, build)


def cached(key: tuple, tq: int, tk: int, device: torch.device, build: Callable[[], Any]) -> Any:
    """The block mask stored under ``(key, Tq, Tk, device)``, made by ``build()`` the first time."""
    full_key = (key, tq, tk, str(device))
    if full_key in _MASKS:
        _MASKS.move_to_end(full_key)
        return _MASKS[full_key]
    with torch.inference_mode(False):  # the cached mask must also serve later calls under autograd
        bm = build()
    _MASKS[full_key] = bm
    if len(_MASKS) > _MAX_MASKS:
        _MASKS.popitem(last=False)
    return bm


def _flex_call(*args: Any, **kwargs: Any) -> Any:
    return flex_attention(*args, **kwargs)


def _own_code(name: str) -> Callable[..., Any]:
    """``flex_attention`` behind a function with a code object of its own, named ``name``: dynamo keeps the
    compiled variants of a function, and counts them against its recompile limit, on the code object."""
    fn = FunctionType(_flex_call.__code__.replace(co_name=name), _flex_call.__globals__, name)
    fn.__qualname__ = name
    return fn


class CompiledFlex:
    """``flex_attention`` compiled, one compiled function per grad mode, each allowed :data:`RECOMPILE_LIMIT` variants.

    Training steps (grad enabled) and evaluation (``no_grad``) compile different variants of the same
    shapes, and each distinct ``(Tq, Tk)``, block mask layout or ``score_mod`` constant adds one more.
    Each grad mode has its own code object, so the two do not share dynamo's per-function limit, and a
    call raises that limit to ``max(recompile_limit, RECOMPILE_LIMIT)`` while it runs. ``fullgraph=True``
    turns a call past the limit, which dynamo would otherwise run as unfused eager FlexAttention, into
    a ``RuntimeError``. Inside a compiled model the call is left to the enclosing graph.

    Args:
        autotune: compile with max-autotune (without CUDA graphs).
        name: a suffix of the code objects' names, so that callers given their own functions keep their own variants.
    """

    def __init__(self, autotune: bool = False, name: str = "") -> None:
        mode = "max-autotune-no-cudagraphs" if autotune else None
        tag = ("_autotune" if autotune else "") + (f"_{name}" if name else "")
        self.autotune = autotune
        self.functions = {grad: torch.compile(_own_code(f"flex_attention{tag}_{'grad' if grad else 'no_grad'}"),
                                              fullgraph=True, dynamic=False, mode=mode)
                          for grad in (True, False)}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if torch.compiler.is_compiling():
            return flex_attention(*args, **kwargs)
        grad = torch.is_grad_enabled()
        config = torch._dynamo.config
        limit = config.recompile_limit
        if limit < RECOMPILE_LIMIT:
            config.recompile_limit = RECOMPILE_LIMIT
        try:
            return self.functions[grad](*args, **kwargs)
        except FailOnRecompileLimitHit as e:
            raise RuntimeError(
                f"compiled FlexAttention ({'grad enabled' if grad else 'no grad'}) reached its limit of "
                f"{max(limit, RECOMPILE_LIMIT)} compiled variants (shapes, masks, score_mod constants); raise "
                "attnkit.attention.flex.RECOMPILE_LIMIT or pad lengths to fewer distinct values") from e
        finally:
            if limit < RECOMPILE_LIMIT:
                config.recompile_limit = limit


def compiled(autotune: bool = False, name: str = "") -> CompiledFlex:
    """The process's :class:`CompiledFlex` of this setting.

    ``autotune``: with max-autotune (without CUDA graphs), which also searches the tile
    configurations that a key block of 64 needs in the backward pass.
    """
    if (autotune, name) not in _COMPILED:
        _COMPILED[(autotune, name)] = CompiledFlex(autotune, name)
    return _COMPILED[(autotune, name)]


def key_padding(mask: Tensor | None, batch: int, tk: int) -> Tensor | None:
    """``mask`` as a ``(B, Tk)`` key-keep table when it is a key-padding mask (broadcastable
    ``(B or 1, 1, 1, Tk)``, boolean), else ``None`` (a mask FlexAttention is not given here)."""
    if mask is None or mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1:
        return None
    if mask.shape[-1] != tk or mask.shape[0] not in (1, batch):
        return None
    return mask[:, 0, 0, :].expand(batch, tk)  # (B, Tk)


def attend(
    q: Tensor, k: Tensor, v: Tensor, pattern: Pattern, key: tuple, scale: float, key_keep: Tensor | None = None,
    tiles: tuple[int, int] | None = None, graphs: dict | None = None,
) -> Tensor:
    """softmax(q k^T * scale) v over the pattern, ``(B, H, Tq, Dv)``, with compiled FlexAttention.

    ``key_keep: (B, Tk)`` (True = a real key) drops padding keys through a score modification
    (-inf), so the cached block mask of the pattern still serves every batch; rows left with no
    key give zeros, as FlexAttention defines them. ``tiles`` other than the default (128, 128)
    compile with max-autotune. ``graphs``: a kernel's store of captured calls
    (:func:`attnkit.attention.graphed.cache_for`): the call without a key-padding mask replays
    CUDA graphs (:class:`~attnkit.attention.graphed.GraphedCall`).
    """
    fn = compiled(autotune=tiles is not None and tuple(tiles) != (128, 128))
    bm = block_mask(pattern, key, q.shape[-2], k.shape[-2], q.device, tiles)
    if key_keep is None:
        if graphs is not None and not torch.compiler.is_compiling():
            return graphed.run(graphs, (key, tiles, scale), lambda q, k, v: fn(q, k, v, block_mask=bm, scale=scale), q, k, v)
        return fn(q, k, v, block_mask=bm, scale=scale)

    def drop_padding(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return torch.where(key_keep[b, kv_idx], score, -float("inf"))

    return fn(q, k, v, block_mask=bm, score_mod=drop_padding, scale=scale)


class _Causal(Pattern):
    """Bottom-right aligned causal visibility, as a pattern for a block mask."""

    def keep_pos(self, h: Tensor, i: Tensor, j: Tensor) -> Tensor:
        return j <= i


def positional(
    kernel: Any, q: Tensor, k: Tensor, v: Tensor, *, mask: Tensor | None, causal: bool, score_mod: Callable[..., Tensor]
) -> Tensor | None:
    """A softmax kernel's attention with a positional ``score_mod`` (ALiBi, T5 bias) in compiled FlexAttention.

    The sparse kernels keep their pattern's cached block mask, ``scaled_dot``/``dot`` get the causal
    one (or none), so no ``(Tq, Tk)`` bias is built. Returns None (the caller takes the dense path)
    where this does not apply: not CUDA, fewer than :data:`MIN_QUERIES` queries, attention dropout in
    training, a mask other than key padding, or another kernel.
    """
    from attnkit.attention.scaled_dot import ScaledDotProduct
    from attnkit.attention.sparse import SparseAttention

    if not available(q) or q.shape[-2] < MIN_QUERIES or (kernel.training and kernel.dropout):
        return None
    tq, tk = q.shape[-2], k.shape[-2]
    key_keep = key_padding(mask, q.shape[0], tk)
    if mask is not None and key_keep is None:
        return None
    tiles = None
    if isinstance(kernel, SparseAttention) and kernel.backend in ("auto", "flex"):
        pattern = kernel.pattern(causal)
        kernel._check_heads(pattern, q.shape[1])
        pattern.check(tq, tk)
        key: tuple = (kernel.kind, kernel._key(), causal)
        scale, tiles = kernel._scale(q.shape[-1]), kernel.flex_tiles
    elif isinstance(kernel, ScaledDotProduct):
        pattern, key, scale = (_Causal(True) if causal else None), ("causal",), kernel._scale(q.shape[-1])
    else:
        return None
    bm = None if pattern is None else block_mask(pattern, key, tq, tk, q.device, tiles)
    gqa = q.shape[1] != k.shape[1]
    band = getattr(score_mod, "band_values", None)  # T5's band (attnkit.positions.t5_band): its gradient comes after
    if band is not None:
        if not (causal and isinstance(kernel, ScaledDotProduct)):
            return None  # the band's gradient assumes every earlier key visible
        return _unless_failed("the T5 band", "T5's bias goes to the kernel's bias argument (t5_train_path=distance)",
                              lambda: _band_call(compiled(name="t5_band"), q, k, v, bm, band, key_keep, scale, gqa))

    mod = _with_padding(score_mod, key_keep)
    fn = compiled(autotune=tiles is not None and tuple(tiles) != (128, 128))
    name = f"the score_mod {getattr(score_mod, '__name__', 'score_mod')!r}"
    return _unless_failed(name, "its calls take the kernel's bias argument",
                          lambda: fn(q, k, v, block_mask=bm, score_mod=mod, scale=scale, enable_gqa=gqa))


def _with_padding(score_mod: Callable[..., Tensor], key_keep: Tensor | None) -> Callable[..., Tensor]:
    """``score_mod`` with the padding keys (``key_keep[b, j]`` False) at -inf (the compiled function always sees this
    one wrapper)."""
    def mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        s = score_mod(score, b, h, q_idx, kv_idx)
        return s if key_keep is None else torch.where(key_keep[b, kv_idx], s, -float("inf"))

    return mod


# The forward tiles of the T5 band's kernel: its score_mod reads a table entry per score, which the default 128-wide
# tiles of the forward pass wait on; 64 x 64 tiles hide it (benchmarks/positions_speed.py --profile shows the kernels).
BAND_TILES = {"BLOCK_M": 64, "BLOCK_N": 64}
_FAILED: dict[str, str] = {}  # what did not compile in this process (``_unless_failed``'s names) -> its error


def _unless_failed(name: str, instead: str, call: Callable[[], Tensor | None]) -> Tensor | None:
    """``call()`` (a compiled FlexAttention call), or None, the caller's cue to take the kernel's bias path: where
    ``name`` failed to compile earlier in this process, or fails now (Triton out of shared memory on this card, say),
    which warns once with the error and ``instead``."""
    if name in _FAILED:
        return None
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - a kernel this card cannot compile: the bias path computes the same
        if torch.compiler.is_compiling():
            raise
        _FAILED[name] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        warnings.warn(f"FlexAttention with {name} did not compile ({_FAILED[name]}); {instead} in this process", RuntimeWarning,
                      stacklevel=3)
        return None


def _band_call(fn: CompiledFlex, q: Tensor, k: Tensor, v: Tensor, bm: Any, band: Tensor, key_keep: Tensor | None,
               scale: float, gqa: bool) -> Tensor:
    """T5's causal band in FlexAttention with the log-sum-exp, joined to the band's gradient
    (:mod:`attnkit.positions.t5_band`); :func:`_unless_failed` turns a kernel that does not compile into the bias path."""
    from attnkit.positions.t5_band import band_score_mod, with_band_gradient

    read = band_score_mod(band.detach().to(q.dtype))  # in the queries' dtype, as the dense path adds the bias
    mod = _with_padding(read, key_keep)
    lse_request = {"return_aux": AuxRequest(lse=True)} if AuxRequest is not None else {"return_lse": True}
    out, aux = fn(q, k, v, block_mask=bm, score_mod=mod, scale=scale, enable_gqa=gqa, kernel_options=BAND_TILES, **lse_request)
    return with_band_gradient(out, aux if AuxRequest is None else aux.lse, band, q, k, v, scale, key_keep)
