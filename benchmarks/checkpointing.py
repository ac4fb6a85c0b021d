"""Activation checkpointing on GPT-2 124M (peak memory, tokens/s) and the memory-mapped token reader's pace.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/checkpointing.py                       # GPU: contexts 1024 and 2048, bf16
    python benchmarks/checkpointing.py --quick --device cpu  # tiny sizes: a smoke test

Method (see BENCHMARKS.md):

* ``checkpointing``: four copies of the ``gpt2`` preset (124M parameters, same weights) in one
  process: ``plain``; ``checkpointed``, with
  :func:`attnkit.training.distributed.apply_activation_checkpointing`; ``chunked``, which computes
  the output layer and cross-entropy ``--loss-chunk`` tokens at a time
  (:func:`attnkit.objectives.chunked_ce.head_loss`, what ``train.execution.chunked_loss=true``
  runs), so the float32 logits over the vocabulary are never whole; and ``checkpointed+chunked``,
  both. One optimizer step each
  (forward, cross-entropy on float32 logits, backward, fused AdamW) with fp32 weights under bf16
  autocast, timed interleaved with :func:`benchmarks.common.time_interleaved`. Peak memory is
  :func:`benchmarks.common.step_peak_memory`: the bytes allocated at the peak of one step above
  what the weights and optimizer state hold before it (activations, gradients, workspace).
  Before timing, one batch's loss and gradients are compared between the plain copy and each other.
* ``reader``: a token file of random ids (``--reader-tokens``) is written with
  :func:`attnkit.data.stream.write_token_file`; the windows of training batches are read
  through :class:`attnkit.data.stream.TokenWindows` (memory map, then the copy to the device)
  and, for comparison, indexed from the same tokens held as a tensor on the device, as
  :class:`attnkit.data.lm.LMTask` does. Both in tokens/s, set against the training step's
  tokens/s at the same batch and context: the reader keeps pace if it is many times faster.
  The file was just written, so its pages are in the page cache (a cold disk reads slower).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import environment, markdown_table, pick_device, step_peak_memory, synchronize, time_interleaved, write_json  # noqa: E402

from attnkit.data.stream import TokenFile, TokenWindows, write_token_file  # noqa: E402
from attnkit.models.gpt import GPT, gpt_preset  # noqa: E402
from attnkit.objectives.chunked_ce import head_loss  # noqa: E402
from attnkit.training import build_optimizer  # noqa: E402
from attnkit.training.distributed import apply_activation_checkpointing  # noqa: E402


VARIANTS = ("plain", "checkpointed", "chunked", "checkpointed+chunked")


def build(size: str, context: int, device: torch.device, quick: bool) -> dict[str, GPT]:
    """The plain model and its copies with the same weights (checkpointed where the name says), by variant name."""
    overrides: dict[str, Any] = {"context": context}
    if quick:
        overrides.update(n_layers=2, d_model=64, n_heads=4, vocab_size=512)
    cfg = gpt_preset(size, **overrides)
    torch.manual_seed(0)
    plain = GPT(cfg).to(device)
    models = {"plain": plain}
    for name in VARIANTS[1:]:
        copy = GPT(cfg).to(device)
        copy.load_state_dict(plain.state_dict())
        models[name] = apply_activation_checkpointing(copy) if name.startswith("checkpointed") else copy
    return models


def make_step(model: GPT, batches: list[torch.Tensor], device: torch.device, bf16: bool, chunk: int = 0) -> Any:
    """``(step, loss_of)``; ``chunk`` > 0: the output layer and loss that many tokens at a time."""
    opt = build_optimizer(model, "adamw", 1e-4, (0.9, 0.999), 1e-8, 0.01)  # fused on CUDA

    def loss_of(batch: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if chunk:
                return head_loss(model, batch[:, :-1], batch[:, 1:], chunk=chunk)[0]  # float32 per chunk
            logits = model(batch[:, :-1]).logits  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())

    def step(i: int) -> None:
        loss_of(batches[i % len(batches)]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, loss_of


def check_equal(plain: GPT, ckpt: GPT, loss_plain: Any, loss_ckpt: Any, batch: torch.Tensor) -> dict[str, float]:
    """One batch through both copies (before any step): loss difference and the largest relative gradient difference."""
    a, b = loss_plain(batch), loss_ckpt(batch)
    a.backward()
    b.backward()
    worst = 0.0
    for p, q in zip(plain.parameters(), ckpt.parameters()):
        worst = max(worst, ((p.grad - q.grad).norm() / p.grad.norm().clamp(min=1e-12)).item())
        p.grad, q.grad = None, None
    return {"loss_abs_diff": abs(a.item() - b.item()), "max_rel_grad_diff": worst}


def bench_checkpointing(args: argparse.Namespace, device: torch.device, context: int, batch: int) -> dict[str, Any]:
    models = build(args.size, context, device, args.quick)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, models["plain"].config.vocab_size, (batch, context + 1), generator=g).to(device) for _ in range(4)]
    bf16 = device.type == "cuda" or args.bf16_cpu
    made = {name: make_step(m, batches, device, bf16, chunk=args.loss_chunk if name.endswith("chunked") else 0) for name, m in models.items()}
    steps = {name: step for name, (step, _) in made.items()}
    check = {name: check_equal(models["plain"], models[name], made["plain"][1], made[name][1], batches[0]) for name in VARIANTS[1:]}
    for step in steps.values():
        step(0)  # optimizer state allocated before the memory is measured
    mem = {name: step_peak_memory(step, device) for name, step in steps.items()}
    times = time_interleaved(steps, device, warmup=args.warmup, iters=args.iters, rounds=args.rounds)
    tokens = batch * context
    out: dict[str, Any] = {"context": context, "batch": batch, "tokens_per_step": tokens, "loss_chunk": args.loss_chunk, "check": check,
                           "timing": {}, "tokens_per_s_change": {}, "memory_change": {}, "goal_met": {}}
    for name in VARIANTS:
        t = times[name]
        out["timing"][name] = {"median_ms": t.median_ms, "round_medians_ms": t.round_medians_ms, "tokens_per_s": tokens / (t.median_ms / 1e3),
                               "peak_step_bytes": mem[name]}
    tp = out["timing"]["plain"]
    for name in VARIANTS[1:]:  # against plain
        out["tokens_per_s_change"][name] = out["timing"][name]["tokens_per_s"] / tp["tokens_per_s"] - 1.0
        if mem["plain"]:
            out["memory_change"][name] = mem[name] / mem["plain"] - 1.0
            out["goal_met"][name] = out["memory_change"][name] <= -0.40 and out["tokens_per_s_change"][name] >= -0.25  # the goal
    return out


def bench_reader(args: argparse.Namespace, device: torch.device, context: int, batch: int, train_tokens_per_s: float) -> dict[str, Any]:
    """Windows read from the memory-mapped file against indexing a device tensor, in tokens/s."""
    with tempfile.TemporaryDirectory() as tmp:
        path, tok = Path(tmp) / "corpus.bin", Path(tmp) / "tokenizer.json"
        tok.write_text("{}")
        rng = np.random.default_rng(0)
        chunk = 1 << 22
        docs = (rng.integers(0, 50257, min(chunk, args.reader_tokens - i)) for i in range(0, args.reader_tokens, chunk))  # arrays of ids
        start = time.perf_counter()
        write_token_file(path, docs, vocab_size=50257, tokenizer=tok, files=[])
        write_s = time.perf_counter() - start
        file = TokenFile(path)
        windows = TokenWindows(file, context=context, batch_size=batch)
        in_memory = file.read(0, len(file)).to(device)  # (N,)
        offsets = torch.arange(context + 1, device=device)

        def from_file(i: int) -> None:
            windows.batch(windows.starts(0, 0, i)).to(device, non_blocking=True)

        def from_memory(i: int) -> None:
            in_memory[windows.starts(0, 0, i).to(device)[:, None] + offsets]  # (B, T+1), as LMTask

        times = time_interleaved({"memmap": from_file, "in_memory": from_memory}, device, warmup=3, iters=args.reader_iters, rounds=3)
        synchronize(device)
        tokens = batch * (context + 1)
        rates = {name: tokens / (t.median_ms / 1e3) for name, t in times.items()}
        return {
            "file_tokens": len(file), "file_bytes": path.stat().st_size, "write_s": write_s, "context": context, "batch": batch,
            "tokens_per_s": rates, "median_ms": {n: t.median_ms for n, t in times.items()},
            "train_step_tokens_per_s": train_tokens_per_s, "memmap_over_training_pace": rates["memmap"] / train_tokens_per_s,
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if present)")
    ap.add_argument("--size", default="gpt2", help="GPT preset (default: gpt2, 124M)")
    ap.add_argument("--contexts", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--tokens-per-step", type=int, default=16384, help="batch = this / context (default: 16 x 1024)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reader-tokens", type=int, default=100_000_000, help="tokens in the reader's file (default: 100M, 200 MB)")
    ap.add_argument("--reader-iters", type=int, default=50)
    ap.add_argument("--loss-chunk", type=int, default=4096, help="tokens per chunk of the chunked loss (default: 4096)")
    ap.add_argument("--bf16-cpu", action="store_true", help="bf16 autocast on the CPU too")
    ap.add_argument("--quick", action="store_true", help="tiny model, contexts 64 and 128, chunks of 100 tokens, a small file: a smoke test")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args()
    if args.quick:
        args.contexts, args.tokens_per_step, args.warmup, args.iters, args.rounds = [64, 128], 256, 1, 2, 2
        args.reader_tokens, args.reader_iters = 200_000, 5
        args.loss_chunk = min(args.loss_chunk, 100)  # several chunks per batch
    device = pick_device(args.device)
    runs = [bench_checkpointing(args, device, t, max(1, args.tokens_per_step // t)) for t in args.contexts]
    first = runs[0]
    reader = bench_reader(args, device, first["context"], first["batch"], first["timing"]["plain"]["tokens_per_s"])
    payload = {"environment": environment(device), "size": args.size, "quick": args.quick,
               "precision": "bf16 autocast, fp32 weights" if device.type == "cuda" or args.bf16_cpu else "fp32",
               "checkpointing": runs, "reader": reader}
    path = write_json("checkpointing", payload, args.out_dir, suffix="-quick" if args.quick else "")
    rows = []
    for r in runs:
        for name in VARIANTS:
            t = r["timing"][name]
            mem = f"{t['peak_step_bytes'] / 2**30:.2f}" if t["peak_step_bytes"] else "-"
            rows.append([str(r["context"]), str(r["batch"]), name, f"{t['tokens_per_s']:,.0f}", mem])
    print(markdown_table(["context", "batch", "model", "tokens/s", "peak step GiB"], rows))
    for r in runs:
        for name in VARIANTS[1:]:
            change = f"{r['memory_change'][name]:+.1%}" if name in r["memory_change"] else "n/a (CPU)"
            print(f"context {r['context']} {name}: memory {change}, tokens/s {r['tokens_per_s_change'][name]:+.1%}; check {r['check'][name]}")
    print(f"reader: memmap {reader['tokens_per_s']['memmap']:,.0f} tokens/s, in memory {reader['tokens_per_s']['in_memory']:,.0f}; "
          f"{reader['memmap_over_training_pace']:.1f}x the training step's pace")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
