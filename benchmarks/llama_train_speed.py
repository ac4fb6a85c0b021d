"""Training speed of attnkit's Llama-family GPT against ``transformers.LlamaForCausalLM``, same weights, one process.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/llama_train_speed.py                       # one GPU: 12 layers, d 768, 12 heads, 4 KV heads, bf16
    python benchmarks/llama_train_speed.py --quick --device cpu  # smoke run: a tiny model, a few steps

The model is the shape of attnkit's ``llama-124m`` preset: 12 layers, d_model 768, 12 query and 4
key/value heads, SwiGLU d_ff 2048, vocabulary 32,000, untied output (124.7M parameters). The
Hugging Face model is built from ``LlamaConfig`` with random weights (SDPA attention), saved with
``save_pretrained`` and read back by ``attnkit.load`` (the key map of :mod:`attnkit.hub.llama`),
so both hold the same weights. Before timing, their fp32 logits are compared on a batch (the max
absolute difference is printed and stored; above ``1e-3`` the run stops).

One training step is the same function for both: the loss (forward on ``--batch`` x ``--seq``
random token ids, no padding and no attention mask, then next-token cross-entropy on float32
logits), backward, and a fused AdamW step, under bf16 autocast (``--dtype``). Modes: Hugging Face
eager, Hugging Face compiled, attnkit eager, attnkit compiled; a compiled mode runs the loss
function (model and cross-entropy) under ``torch.compile``, so the (batch x seq x 32,000) logits
and their cross-entropy fuse for both alike. Each mode's first call (which compiles) is timed apart, then the modes are timed in interleaved rounds with CUDA events
(``benchmarks/common.py``), the median step reported as tokens per second. Ratios are Hugging
Face time over attnkit time (above 1: attnkit is faster). Results go to
``benchmarks/results/llama-train-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

FULL = dict(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
            num_key_value_heads=4, max_position_embeddings=1024)
TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)


def build_models(quick: bool, seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random ``LlamaForCausalLM`` (SDPA) and the attnkit GPT loaded from its saved directory."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import attnkit

    torch.manual_seed(seed)
    config = LlamaConfig(**(TINY if quick else FULL), tie_word_embeddings=False, rms_norm_eps=1e-6, attn_implementation="sdpa")
    hf = LlamaForCausalLM(config)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = attnkit.load(tmp)
    return hf, ours


def logits_fn(model: torch.nn.Module, is_hf: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    if is_hf:
        return lambda ids: model(input_ids=ids, use_cache=False).logits
    return lambda ids: model(ids).logits


@torch.no_grad()
def parity(hf: torch.nn.Module, ours: torch.nn.Module, device: torch.device, vocab: int) -> float:
    """Max |logits difference| in float32 on a 2 x 64 batch."""
    hf.eval()
    ours.eval()
    ids = torch.randint(0, vocab, (2, 64), generator=torch.Generator().manual_seed(1)).to(device)
    diff = (logits_fn(hf, True)(ids) - logits_fn(ours, False)(ids)).abs().max().item()
    hf.train()
    ours.train()
    return diff


def loss_fn(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Next-token cross-entropy on float32 logits of ``ids: (B, T + 1)``: one function for both models."""

    def loss(ids: torch.Tensor) -> torch.Tensor:
        logits = fn(ids[:, :-1])  # (B, T, V)
        return F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())

    return loss


def train_step(loss: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer, device: torch.device,
               dtype: torch.dtype) -> Callable[[torch.Tensor], None]:
    """The loss under autocast, backward, AdamW."""

    def run(ids: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            value = loss(ids)
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def make_optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")


def time_modes(models: dict[str, tuple[torch.nn.Module, bool, bool]], opts: dict[str, torch.optim.Optimizer], args: argparse.Namespace,
               device: torch.device, dtype: torch.dtype, vocab: int) -> dict[str, Any]:
    """First call and interleaved timing of every mode on the same batches (``--seq + 1`` tokens: inputs and targets)."""
    g = torch.Generator().manual_seed(2)
    sets = [torch.randint(0, vocab, (args.batch, args.seq + 1), generator=g).to(device) for _ in range(4)]
    steps: dict[str, Callable[[int], None]] = {}
    for name, (model, is_hf, compiled) in models.items():
        loss = loss_fn(logits_fn(model, is_hf))
        if compiled:
            loss = torch.compile(loss, **({} if args.compile_mode == "default" else {"mode": args.compile_mode}))
        run = train_step(loss, opts["hf" if is_hf else "attnkit"], device, dtype)
        steps[name] = lambda i, run=run: run(sets[i % 4])
    rows = common.time_modes(steps, device, warmup=args.warmup, iters=args.iters, rounds=args.rounds)
    tokens = args.batch * args.seq
    for row in rows.values():
        if "median_ms" in row:
            row["tokens_per_s"] = tokens / (row["median_ms"] / 1e3)
    return {"batch": args.batch, "seq": args.seq, "tokens_per_step": tokens, "modes": rows, "ratios": ratios(rows)}


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Hugging Face step time over attnkit's: the best attnkit mode against each Hugging Face mode."""
    ak = {n: r["median_ms"] for n, r in rows.items() if n.startswith("attnkit") and "median_ms" in r}
    hf = {n: r["median_ms"] for n, r in rows.items() if n.startswith("hf") and "median_ms" in r}
    out: dict[str, float] = {}
    for a, ta in ak.items():
        for h, th in hf.items():
            out[f"{a} vs {h}"] = th / ta
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when present)")
    p.add_argument("--quick", action="store_true", help="tiny model, few steps (a CPU smoke run)")
    p.add_argument("--batch", type=int, default=16, help="sequences per step (default: 16)")
    p.add_argument("--seq", type=int, default=1024, help="tokens per sequence (default: 1024)")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="autocast dtype (default: bf16)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile modes (auto: on CUDA only)")
    p.add_argument("--compile-mode", default="default", choices=("default", "max-autotune-no-cudagraphs", "max-autotune"),
                   help="torch.compile mode of both compiled modes (default: default)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps per mode after the first call (default: 10)")
    p.add_argument("--iters", type=int, default=20, help="timed steps per mode and round (default: 20)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default: 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=None, help="folder for the JSON (default: benchmarks/results)")
    args = p.parse_args()
    device = common.pick_device(args.device)
    if args.quick:
        args.batch, args.seq, args.warmup, args.iters, args.rounds = 4, 63, 1, 2, 2
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    t_start = time.perf_counter()
    hf, ours = build_models(args.quick, args.seed)
    vocab = hf.config.vocab_size
    if args.seq > ours.config.context:
        raise SystemExit(f"error: --seq {args.seq} exceeds the model's context {ours.config.context}")
    hf.to(device).train()
    ours.to(device).train()
    diff = parity(hf, ours, device, vocab)
    print(f"fp32 logits, Hugging Face vs attnkit: max |diff| = {diff:.2e}", flush=True)
    if diff > 1e-3:
        raise SystemExit(f"error: the two models disagree (max |logits diff| {diff:.2e} > 1e-3); timings would not compare like with like")
    opts = {"hf": make_optimizer(hf, device), "attnkit": make_optimizer(ours, device)}
    models: dict[str, tuple[torch.nn.Module, bool, bool]] = {"hf eager": (hf, True, False), "attnkit eager": (ours, False, False)}
    if compile_on:
        models = {"hf eager": (hf, True, False), "hf compiled": (hf, True, True),
                  "attnkit eager": (ours, False, False), "attnkit compiled": (ours, False, True)}
    print(f"== train: batch {args.batch} x {args.seq} tokens, {args.dtype}", flush=True)
    result = time_modes(models, opts, args, device, dtype, vocab)
    total = time.perf_counter() - t_start

    import transformers

    payload = {
        "benchmark": "llama-train", "quick": args.quick,
        "model": "tiny Llama" if args.quick else "Llama, 12 layers, d 768, 12 heads, 4 KV heads, d_ff 2048, vocab 32000, untied",
        "parameters": sum(q.numel() for q in ours.parameters()), "dtype": args.dtype, "compile": compile_on,
        "compile_mode": args.compile_mode,
        "logits_max_abs_diff_fp32": diff, "total_s": total, "train": result,
        "environment": {**common.environment(device), "transformers": transformers.__version__}, "argv": sys.argv,
    }
    path = common.write_json("llama-train", payload, args.results, suffix="-quick" if args.quick else "")
    print(report(result))
    print(f"total {total:.0f}s; wrote {path}")


def report(r: dict[str, Any]) -> str:
    rows = [[name, f"{m['median_ms']:.2f}", f"{m['spread_ms']:.2f}", f"{m['tokens_per_s'] / 1e3:.1f}k", f"{m['first_call_s']:.1f}"]
            if "failed" not in m else [name, "failed", "-", "-", "-"] for name, m in r["modes"].items()]
    lines = [f"\ntrain: batch {r['batch']} x {r['seq']} tokens",
             common.markdown_table(["mode", "ms/step", "spread", "tokens/s", "first call s"], rows)]
    lines += [f"ratio {k}: {v:.2f} (Hugging Face time / attnkit time)" for k, v in r["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
