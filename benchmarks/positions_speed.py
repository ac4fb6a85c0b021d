"""Training-step speed of each positional kind against learned absolute positions on SDPA.

    python benchmarks/positions_speed.py                 # GPU: B=4, H=12, d=64, T=2048, bf16, 12 layers
    python benchmarks/positions_speed.py --quick         # CPU smoke: tiny sizes
    python benchmarks/positions_speed.py --kinds learned t5_bias:distance t5_bias:flex_band

One process, the same GPT (``d_model = H * d``) and the same batches for every row; each row is one
``model.attention.position.kind``, ``learned`` the model's learned absolute positions (the baseline, whose
attention is SDPA's causal kernel). A step is forward + backward of the next-token loss under bf16
autocast on CUDA. Rows are timed interleaved (:func:`benchmarks.common.time_interleaved`); ``ratio`` is
the baseline's median step time over the row's (>= 0.9 is the goal). A second table times one attention
layer alone (``MultiHeadAttention``, forward + backward), where ALiBi and T5 take FlexAttention with a
``score_mod`` on CUDA. Before timing, each kind's fast path is checked against its dense reference path
(``need_weights=True``) on the same inputs. A kind ``t5_bias:<path>`` is T5's bias with
``position.t5_train_path=<path>`` (``t5_bias`` alone: the default path); each such row is also checked under
autograd against ``t5_bias:dense`` with the same weights (the output, the input's and the table's gradients in
the layer table; the loss and the table's gradient in the model table), and a row whose check raises is
recorded with its error and not timed. Writes ``benchmarks/results/positions-speed-<device>-<date>.json``
(after the checks and after each table); ``--profile N`` adds, for each row over N steps, the wall and device-busy
time per step and the top kernels by device time.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnkit.attention import MultiHeadAttention, flex  # noqa: E402
from attnkit.models.gpt import GPT, GPTConfig  # noqa: E402
from attnkit.models.transformer import AttentionConfig  # noqa: E402
from attnkit.positions.config import PositionConfig  # noqa: E402
from benchmarks.common import environment, pick_device, synchronize, time_interleaved, write_json  # noqa: E402

T5_PATHS = ["dense", "distance", "flex_band"]
KINDS = ["learned", "rotary", "alibi", *(f"t5_bias:{p}" for p in T5_PATHS), "relative_key", "relative_key_query", "xl_relative"]
CHOICES = [*KINDS, "t5_bias"]


def position(kind: str) -> PositionConfig:
    """The position config of a row: ``learned`` (none in attention), a kind, or ``t5_bias:<t5_train_path>``."""
    if kind == "learned":
        return PositionConfig(kind="none")
    name, _, path = kind.partition(":")
    return PositionConfig(kind=name, **({"t5_train_path": path} if path else {}))  # type: ignore[arg-type]


def is_t5(kind: str) -> bool:
    return kind.split(":")[0] == "t5_bias"


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| (fp32)."""
    a, b = a.float(), b.float()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def band_failure() -> str | None:
    """Why T5's band did not compile in this process (its rows then ran on the ``distance`` path), or None."""
    return flex._FAILED.get("the T5 band")


def profile(step: Callable[[int], None], device: torch.device, n: int, top: int = 15) -> dict[str, Any]:
    """Where ``n`` steps of ``step`` spend their time (``torch.profiler``): the wall time per step under the profiler,
    the time per step the device spent in kernels (CUDA; below the wall time when the host does not keep it fed), and
    the ``top`` operators and kernels by time on the device (the CPU without CUDA): name, milliseconds and calls per
    step (an operator's row repeats the time of the kernels it launched)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    step(0)
    synchronize(device)
    with warnings.catch_warnings(), torch_profile(activities=activities) as prof:
        warnings.simplefilter("ignore")  # the profiler's notes about its own setup
        start = time.perf_counter()
        for i in range(n):
            step(i)
        synchronize(device)
        wall = time.perf_counter() - start
    rows: dict[str, dict[str, Any]] = {}
    busy = 0.0
    for e in prof.key_averages():
        us = e.self_device_time_total if on_cuda else e.self_cpu_time_total
        if on_cuda and e.device_type == DeviceType.CUDA:
            busy += e.self_device_time_total
        if us > 0 and e.key not in rows:  # a Triton kernel's launching op carries the kernel's name and time: listed once
            rows[e.key] = {"name": e.key, "ms_per_step": round(us / 1000 / n, 4), "calls_per_step": round(e.count / n, 2)}
    return {"wall_ms_per_step": round(wall * 1000 / n, 4), "device_busy_ms_per_step": round(busy / 1000 / n, 4) if on_cuda else None,
            "top": sorted(rows.values(), key=lambda r: -r["ms_per_step"])[:top]}


def table_grad(model: torch.nn.Module) -> torch.Tensor:
    """The gradient of the (shared) T5 table."""
    return next(p.grad for n, p in model.named_parameters() if n.endswith("table.weight"))


def model_steps(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Callable[[int], None]], dict[str, Any]]:
    """One GPT per kind, same initial weights where shared, and one step function each; for the T5 rows, the first
    step's loss and table gradient against ``t5_bias:dense`` (or the error that stopped the row)."""
    ids = [torch.randint(0, args.vocab, (args.batch, args.length + 1), device=device) for _ in range(4)]

    def build(kind: str) -> GPT:
        torch.manual_seed(0)
        config = GPTConfig(vocab_size=args.vocab, context=args.length, d_model=args.heads * args.head_dim, n_heads=args.heads,
                           n_layers=args.layers, attention=AttentionConfig(position=position(kind)))
        return GPT(config).to(device)

    def loss_of(fn: Callable[..., Any], x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = fn(x[:, :-1]).logits
        return F.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())

    reference: tuple[float, torch.Tensor] | None = None
    if any(is_t5(k) for k in args.kinds):
        ref = build("t5_bias:dense")
        loss = loss_of(ref, ids[0])
        loss.backward()
        reference = (loss.item(), table_grad(ref).clone())
        del ref
    steps, checks = {}, {}
    for kind in args.kinds:
        model = build(kind)
        fn: Callable[..., Any] = torch.compile(model) if args.compile else model
        if reference is not None and is_t5(kind):
            try:
                loss = loss_of(fn, ids[0])
                loss.backward()
                checks[kind] = {"loss_vs_dense_abs": abs(loss.item() - reference[0]),
                                "table_grad_vs_dense_rel": max_rel(table_grad(model), reference[1])}
                failure = band_failure()
                if kind.endswith("flex_band") and failure:  # the band did not compile: the row runs as distance
                    checks[kind]["band_fell_back_to_distance"] = failure
                    print(f"model {kind}: the band did not compile, timed as distance: {failure}")
            except Exception as e:  # noqa: BLE001 - a path that fails here is reported, the others still timed
                checks[kind] = {"error": f"{type(e).__name__}: {e}"[:500]}
                print(f"model {kind}: check failed: {checks[kind]['error']}")
                continue
            model.zero_grad(set_to_none=True)

        def step(i: int, model: GPT = model, fn: Callable[..., Any] = fn) -> None:
            loss_of(fn, ids[i % len(ids)]).backward()
            for p in model.parameters():
                p.grad = None

        steps[kind] = step
    return steps, checks


def layer_steps(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Callable[[int], None]], dict[str, Any]]:
    """One attention layer per kind (learned: no positional hook), and each fast path's difference from the dense
    reference path (without autograd: ``need_weights=True``; the T5 rows also under autograd against
    ``t5_bias:dense``), or the error that stopped the row."""
    d_model = args.heads * args.head_dim
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    xs = [torch.randn(args.batch, args.length, d_model, device=device, dtype=dtype, requires_grad=True) for _ in range(2)]
    def build(kind: str) -> MultiHeadAttention:
        torch.manual_seed(0)
        return MultiHeadAttention(d_model, args.heads, position=None if kind == "learned" else position(kind)).to(device, dtype)

    def grads(m: MultiHeadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Output, input gradient and table gradient of one training call."""
        x = x.detach().requires_grad_(True)
        out = m(x, causal=True)[0]
        out.float().square().mean().backward()
        g = (out.detach(), x.grad, table_grad(m).clone())
        m.zero_grad(set_to_none=True)
        return g

    x_check = xs[0][:, : min(args.length, 512)]
    reference = grads(build("t5_bias:dense"), x_check) if any(is_t5(k) for k in args.kinds) else None
    steps, errors = {}, {}
    for kind in args.kinds:
        m = build(kind)
        try:
            with torch.no_grad():
                x = x_check
                err: dict[str, Any] = {"inference_fast_vs_dense_max_abs":
                                       (m(x, causal=True)[0].float() - m(x, causal=True, need_weights=True)[0].float()).abs().max().item()}
            if reference is not None and is_t5(kind):
                got = grads(m, x_check)
                err.update({f"train_{name}_vs_dense_rel": max_rel(a, b)
                            for name, a, b in zip(("out", "x_grad", "table_grad"), got, reference)})
        except Exception as e:  # noqa: BLE001 - a path that fails here is reported, the others still timed
            errors[kind] = {"error": f"{type(e).__name__}: {e}"[:500]}
            print(f"layer {kind}: check failed: {errors[kind]['error']}")
            continue
        errors[kind] = err

        def step(i: int, m: MultiHeadAttention = m) -> None:
            x = xs[i % len(xs)]
            m(x, causal=True)[0].float().square().mean().backward()
            x.grad = None
            for p in m.parameters():
                p.grad = None

        steps[kind] = step
    return steps, errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny CPU sizes")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--length", type=int, default=2048)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--kinds", nargs="*", default=KINDS, choices=CHOICES,
                   help="rows; t5_bias:<path> is T5's bias with position.t5_train_path=<path>")
    p.add_argument("--compile", action="store_true", help="torch.compile each model")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after timing, profile N steps of each row: wall and device-busy time per step and the top kernels go into the JSON")
    p.add_argument("--out-dir", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.heads, args.head_dim, args.length, args.layers, args.vocab = 2, 2, 16, 64, 1, 64
        args.warmup, args.iters, args.rounds = 1, 2, 2
    device = pick_device(args.device)
    result: dict[str, Any] = {"benchmark": "positions-speed", "environment": environment(device),
                              "command": " ".join([sys.executable, *sys.argv]),
                              "shape": {k: getattr(args, k) for k in ("batch", "heads", "head_dim", "length", "layers", "vocab")},
                              "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32", "compile": args.compile}
    name = "positions-speed" + ("-compiled" if args.compile else "") + ("-quick" if args.quick else "")
    out_dir = Path(args.out_dir) if args.out_dir else None
    for table, build in (("layer", layer_steps), ("model", model_steps)):
        steps, checks = build(args, device)
        result[table] = {kind: {"check": c} for kind, c in checks.items()}
        write_json(name, result, out_dir)
        timings = time_interleaved(steps, device, warmup=args.warmup, iters=args.iters, rounds=args.rounds)
        base = timings["learned"].median_ms if "learned" in timings else None
        for kind, t in timings.items():
            result[table].setdefault(kind, {}).update(
                {"median_ms": round(t.median_ms, 4), "round_medians_ms": [round(x, 4) for x in t.round_medians_ms],
                 "ratio_vs_learned": None if base is None else round(base / t.median_ms, 3)})
            print(f"{table:>5} {kind:>22}: {t.median_ms:9.3f} ms" + ("" if base is None else f"  x{base / t.median_ms:.2f} of learned")
                  + "".join(f"  {k}={v:.2e}" for k, v in result[table][kind].get("check", {}).items() if isinstance(v, float)))
        failure = band_failure()
        if failure:  # from here on t5_bias:flex_band rows ran as distance
            result[table]["t5_band_fell_back_to_distance"] = failure
            print(f"{table}: T5's band did not compile, flex_band timed as distance: {failure}")
        if args.profile:
            for kind, step in steps.items():
                got = result[table][kind]["profile"] = profile(step, device, args.profile)
                print(f"{table} {kind}: {got['wall_ms_per_step']:.3f} ms per step profiled, device busy {got['device_busy_ms_per_step']} ms; "
                      + ", ".join(f"{r['name'][:40]} {r['ms_per_step']:.3f}" for r in got["top"][:6]))
        path = write_json(name, result, out_dir)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
