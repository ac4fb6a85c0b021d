"""attnkit's GPT against Hugging Face transformers' GPT2LMHeadModel: training, decoding, time to quality.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/gpt.py train                 # GPT-2 124M, context 1024, bf16: tokens/s and MFU
    python benchmarks/gpt.py decode                # batch 1, 16-token prompt, 512 new tokens, greedy, bf16
    python benchmarks/gpt.py shakespeare --data-root ../shared/data   # shakespeare-char recipe: wall time to val loss <= 1.47
    python benchmarks/gpt.py train --size char-shakespeare --device cpu --batch 8   # the CPU comparison
    python benchmarks/gpt.py all --quick --device cpu       # tiny sizes: a smoke test

Method (see BENCHMARKS.md): both models live in one process; the HF model is built from a
``GPT2Config`` with random weights and converted into attnkit with :mod:`attnkit.hub` (logits
checked equal, fp32, before anything is timed); they see the same batches, the same fused
AdamW (:func:`attnkit.training.build_optimizer`) and the same loss (cross-entropy on float32 logits); steps are timed interleaved with
:func:`benchmarks.common.time_interleaved`.

* ``train``: one optimizer step (forward, loss, backward, AdamW) with fp32 weights under
  bf16 autocast; eager, and with ``torch.compile`` on the model-plus-loss function of each.
  MFU = (6 N + 12 L H Q T) FLOPs per token (N: parameters without position embeddings) x
  tokens/s, against the bf16 matmul peak measured here on 8192^3 matmuls.
* ``decode``: bf16 weights; attnkit's :func:`attnkit.generation.generate` with the compiled
  decode step (CUDA graphs), against ``generate`` with the default dynamic cache and with
  ``cache_implementation="static"``; each warmed up, then timed over ``--repeats`` runs.
  Fraction of the bandwidth bound = (bytes of weights read per token / measured copy
  bandwidth) / time per token.
* ``shakespeare``: launches ``attnkit train lm --recipe shakespeare-char`` as a subprocess
  (``--data-root`` holds ``tinyshakespeare/input.txt``; ``--quick``: the recipe's quick variant;
  ``--set`` options override the recipe) and timestamps each evaluation line from the moment of
  launch (start-up and compilation included); the losses are read back from ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    attnkit_command, attnkit_env, environment, markdown_table, pick_device, synchronize, time_interleaved, write_json,
)

import attnkit  # noqa: E402
from attnkit.generation.sampling import SamplingConfig, generate  # noqa: E402
from attnkit.models.gpt import GPT  # noqa: E402
from attnkit.training import build_optimizer  # noqa: E402

SIZES = {
    "gpt2": dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
    "char-shakespeare": dict(vocab_size=65, n_positions=256, n_embd=384, n_layer=6, n_head=6),
    "tiny": dict(vocab_size=96, n_positions=64, n_embd=64, n_layer=2, n_head=4),
}


def build_pair(size: str, device: torch.device, dtype: torch.dtype = torch.float32) -> tuple[Any, GPT, dict[str, Any]]:
    """A random-weight GPT2LMHeadModel (sdpa attention) and the same weights in attnkit's GPT."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(**SIZES[size], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa")
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = attnkit.load(tmp)
    assert isinstance(ours, GPT)
    hf.to(device).eval()
    ours.to(device).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, min(128, cfg.n_positions)), device=device)
    with torch.no_grad():
        err = (hf(ids).logits - ours(ids).logits).abs().max().item()
    if err > 1e-3:
        raise SystemExit(f"error: attnkit and transformers disagree by {err:.2e} before timing")
    hf.to(dtype)
    ours.to(dtype)
    return hf, ours, {"hf_config": SIZES[size], "max_abs_logit_diff_fp32": err}


# -- training -----------------------------------------------------------------------------
def matmul_peak_tflops(device: torch.device) -> float | None:
    """Measured bf16 matmul throughput (8192^3), the MFU denominator."""
    if device.type != "cuda":
        return None
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ b
    end.record()
    synchronize(device)
    return 2 * n**3 * 20 / (start.elapsed_time(end) / 1e3) / 1e12


def train_bench(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    size = "tiny" if args.quick else args.size
    hf, ours, info = build_pair(size, device)
    cfg = SIZES[size]
    batch, t, vocab = args.batch, cfg["n_positions"], cfg["vocab_size"]
    g = torch.Generator().manual_seed(1)
    data = [torch.randint(0, vocab, (batch, t + 1), generator=g).to(device) for _ in range(3)]
    use_bf16 = device.type == "cuda" or args.bf16_cpu
    models = {"attnkit": ours, "hf": hf}
    steps: dict[str, Callable[[int], None]] = {}
    for name, model in models.items():
        model.train()
        opt = build_optimizer(model, "adamw", 1e-4, (0.9, 0.999), 1e-8, 0.01)  # fused on CUDA

        def loss_fn(x: torch.Tensor, y: torch.Tensor, model: Any = model) -> torch.Tensor:
            logits = model(x).logits  # (B, T, V)
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))

        variants = [("eager", loss_fn)]
        if not args.no_compile:
            variants.append(("compiled", torch.compile(loss_fn)))
        for variant, fn in variants:

            def step(i: int, fn: Callable = fn, opt: torch.optim.Optimizer = opt) -> None:
                d = data[i % len(data)]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    loss = fn(d[:, :-1], d[:, 1:])
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            steps[f"{name} {variant}"] = step
    timings = time_interleaved(steps, device, warmup=args.warmup, iters=args.iters, rounds=args.rounds)
    tokens = batch * t
    n_params = ours.num_parameters() - ours.positions.embedding.weight.numel()
    flops_per_token = 6 * n_params + 12 * cfg["n_layer"] * cfg["n_head"] * (cfg["n_embd"] // cfg["n_head"]) * t
    peak = matmul_peak_tflops(device)
    rows = {}
    for name, tm in timings.items():
        tps = tokens / (tm.median_ms / 1e3)
        rows[name] = {
            **tm.to_dict(),
            "tokens_per_s": tps,
            "mfu": (flops_per_token * tps / 1e12 / peak) if peak else None,
        }
    ratios = {}
    for variant in ("eager", "compiled"):
        for ref in ("eager", "compiled"):
            a, h = rows.get(f"attnkit {variant}"), rows.get(f"hf {ref}")
            if a and h:
                ratios[f"attnkit {variant} / hf {ref}"] = a["tokens_per_s"] / h["tokens_per_s"]
    return {
        "size": size, "batch": batch, "context": t, "precision": "bf16 autocast, fp32 weights" if use_bf16 else "fp32",
        "flops_per_token": flops_per_token, "matmul_peak_tflops": peak, "results": rows, "ratios": ratios, **info,
    }


# -- decoding -----------------------------------------------------------------------------
def copy_bandwidth(device: torch.device) -> float | None:
    """Measured device memory bandwidth in bytes/s: (read + write) of a 2 GiB copy."""
    if device.type != "cuda":
        return None
    a = torch.empty(2**30, dtype=torch.bfloat16, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        b.copy_(a)
    end.record()
    synchronize(device)
    return 2 * a.numel() * a.element_size() * 10 / (start.elapsed_time(end) / 1e3)


def decode_bench(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    size = "tiny" if args.quick else "gpt2"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    hf, ours, info = build_pair(size, device, dtype)
    new = 24 if args.quick else args.new_tokens
    g = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, SIZES[size]["vocab_size"], (1, args.prompt_tokens), generator=g)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    compile_ours = device.type == "cuda" and not args.no_compile
    if compile_ours:
        torch._logging.set_logs(perf_hints=True)  # shows "skipping cudagraphs due to ..." if it happens

    def run_ours() -> list[int]:
        out = generate(ours, [prompt[0].tolist()], SamplingConfig(max_new_tokens=new, temperature=0),
                       compile=args.compile_mode if compile_ours else False)
        return out.tokens[0]

    def run_hf(cache: str | None) -> Callable[[], list[int]]:
        def run() -> list[int]:
            kw = {"cache_implementation": cache} if cache else {}
            out = hf.generate(prompt.to(device), attention_mask=torch.ones_like(prompt).to(device), max_new_tokens=new,
                              do_sample=False, **kw)
            return out[0, prompt.shape[1] :].tolist()

        return run

    runs = {"attnkit generate (compiled step)" if compile_ours else "attnkit generate": run_ours, "hf generate (dynamic cache)": run_hf(None)}
    if compile_ours:  # the same with one decoding step per compiled call (block=1) instead of BLOCK
        runs["attnkit generate (compiled, one step per call)"] = lambda: generate(
            ours, [prompt[0].tolist()], SamplingConfig(max_new_tokens=new, temperature=0), compile=args.compile_mode, block=1).tokens[0]
    if device.type == "cuda":
        runs["hf generate (static cache)"] = run_hf("static")
    results: dict[str, Any] = {}
    tokens: dict[str, list[int]] = {}

    def time_run(name: str, fn: Callable[[], list[int]]) -> None:
        t0 = time.perf_counter()
        tokens[name] = fn()  # warm-up: compilation, CUDA graph capture
        fn()
        synchronize(device)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t0)
        results[name] = {"seconds": times, "warmup_seconds": first, "tokens_per_s": len(tokens[name]) / min(times),
                         "new_tokens": len(tokens[name])}

    def keep(name: str) -> bool:  # --only: rows named by a substring; HF's dynamic cache is the tokens' reference
        return not args.only or name == "hf generate (dynamic cache)" or any(s in name for s in args.only)

    for name, fn in runs.items():
        if keep(name):
            time_run(name, fn)
    if compile_ours and keep("attnkit decode loop (no host sync)"):
        results["attnkit decode loop (no host sync)"] = decode_loop(ours, prompt.to(device), new, args.repeats, args.compile_mode)
        tokens["attnkit decode loop (no host sync)"] = tokens.get(next(iter(runs)), [])
    if compile_ours:
        if not args.no_one_row:  # the same generate() after the one-row transform (attnkit.generation.one_row)
            from attnkit.generation import sampling as sampling_module
            from attnkit.generation import use_one_row_linears

            for row, transform, block in (
                ("attnkit generate (compiled step, one-row linears)", use_one_row_linears, None),
                ("attnkit generate (compiled step, one-row linears, one step per call)", use_one_row_linears, 1),
                ("attnkit generate (compiled step, one-row linears, folded norms)",
                 lambda m: use_one_row_linears(m, fold_norms=True), None),  # from here folding stays on the model
                ("attnkit generate (compiled step, one-row linears, folded norms, no cuDNN attention)", no_cudnn_attention, None),
            ):
                torch._dynamo.reset()
                sampling_module._COMPILED.clear()
                sampling_module._REUSED.clear()
                transform(ours)
                if not keep(row):
                    continue

                def run_variant(block: int | None = block) -> list[int]:
                    return generate(ours, [prompt[0].tolist()], SamplingConfig(max_new_tokens=new, temperature=0),
                                    compile=args.compile_mode, block=block).tokens[0]

                try:
                    time_run(row, run_variant)
                except Exception as e:  # noqa: BLE001 - a failed variant is recorded, the rest of the results kept
                    results[row] = {"error": repr(e)[:500]}
                    tokens[row] = []
    ref = tokens["hf generate (dynamic cache)"]
    for name in results:
        same = sum(a == b for a, b in zip(tokens[name], ref))
        results[name]["tokens_equal_to_hf_dynamic"] = f"{same}/{len(ref)}"
    bw = copy_bandwidth(device)
    # Per token every weight matrix is read once; the tied embedding matrix is read whole by the
    # output layer (its input lookup reads one row); position embeddings read one row: left out.
    pos = ours.positions.embedding.weight
    weight_bytes = sum(p.numel() * p.element_size() for p in ours.parameters()) - pos.numel() * pos.element_size()
    timed = {n: r for n, r in results.items() if "tokens_per_s" in r}  # a failed variant holds only its error
    for name, r in timed.items():
        r["bandwidth_bound_fraction"] = (weight_bytes / bw) * r["tokens_per_s"] if bw else None
    ours_name = next((n for n in timed if n.startswith("attnkit")), None)  # the user-facing generate() unless --only left it out
    ratios = {f"attnkit / {n}": timed[ours_name]["tokens_per_s"] / r["tokens_per_s"] for n, r in timed.items() if n != ours_name} if ours_name else {}
    for ours_row in (n for n in timed if n.startswith("attnkit generate") and n != ours_name):
        ratios.update({f"{ours_row} / {n}": timed[ours_row]["tokens_per_s"] / r["tokens_per_s"] for n, r in timed.items() if n.startswith("hf ")})
    return {
        "size": size, "compile_mode": args.compile_mode if compile_ours else None, "dtype": str(dtype), "prompt_tokens": args.prompt_tokens, "new_tokens": new, "batch": 1,
        "weight_bytes_per_token": weight_bytes, "copy_bandwidth_bytes_per_s": bw, "results": results, "ratios": ratios, **info,
    }


def no_cudnn_attention(model: GPT) -> None:
    """SDPA without its cuDNN backend from here on (the one-query attention with a bias then runs
    PyTorch's memory-efficient kernel); the model is unchanged."""
    torch.backends.cuda.enable_cudnn_sdp(False)


def decode_loop(model: GPT, prompt: torch.Tensor, new: int, repeats: int, mode: str = "reduce-overhead") -> dict[str, Any]:
    """Prefill, then ``new - 1`` compiled decode steps feeding the argmax back on the device (no sync)."""
    from attnkit.generation.sampling import compiled_decode_one_token, prefill, reused_static_caches

    step = compiled_decode_one_token(mode)
    t = prompt.shape[1]
    pad = torch.zeros(1, dtype=torch.long, device=prompt.device)
    slots = torch.arange(t, t + new, device=prompt.device)
    # the buffers generate() used (same size rule): the compiled step's address guards hold
    caches = reused_static_caches(model, 1, min(model.config.context, -(-(t + new) // 64) * 64))
    times = []
    for r in range(repeats + 1):
        synchronize(prompt.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            token = prefill(model, prompt, pad, caches).argmax(-1, keepdim=True)
            for i in range(new - 1):
                token = step(model, token, slots[i : i + 1], pad, caches).argmax(-1, keepdim=True)
        synchronize(prompt.device)
        if r:
            times.append(time.perf_counter() - t0)
    return {"seconds": times, "tokens_per_s": new / min(times), "new_tokens": new}


# -- time to quality ----------------------------------------------------------------------
RECIPE = "shakespeare-char"  # attnkit recipes: nanoGPT's tiny Shakespeare baseline with a weight average
EVAL_LINE = re.compile(r"^step (\d+): (.*)$")  # what the Trainer prints at each evaluation: "step N: loss=... "


def shakespeare_bench(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    root = Path(args.data_root)
    if not (root / "tinyshakespeare" / "input.txt").is_file():
        raise SystemExit(f"error: no tinyshakespeare/input.txt under --data-root {root}")
    out = Path(tempfile.mkdtemp(prefix="attnkit-shakespeare-"))
    cmd = [*attnkit_command(), "train", "lm", "--recipe", RECIPE, "--data-root", str(root), "--out", str(out), "--no-progress",
           *(["--quick"] if args.quick else []), "--set", f"train.device={device}"]
    for s in args.set:
        cmd += ["--set", s]
    launch = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=attnkit_env())
    evals, lines = [], []
    assert proc.stdout is not None
    for line in proc.stdout:
        now = time.perf_counter() - launch
        lines.append(line.rstrip("\n"))
        m = EVAL_LINE.match(line.strip())
        if m:
            evals.append({"seconds": now, "step": int(m.group(1))})
            print(f"  {now:6.1f}s  {line.strip()}", flush=True)
    code = proc.wait()
    total = time.perf_counter() - launch
    metrics = out / "metrics.jsonl"
    records = [json.loads(x) for x in (metrics.read_text().splitlines() if metrics.is_file() else []) if x.strip()]
    losses = {r["step"]: r["eval/loss"] for r in records if "eval/loss" in r}  # printed rounded; the file keeps them whole
    for e in evals:
        e["loss"] = losses.get(e["step"], float("nan"))
    first_147 = next((e for e in evals if e["loss"] <= 1.47), None)
    best = min(evals, key=lambda e: e["loss"]) if evals else None
    return {
        "recipe": RECIPE, "command": " ".join(cmd), "exit_code": code, "wall_seconds": total, "evals": evals, "best": best,
        "first_at_or_below_1.47": first_147, "log_tail": lines[-40:],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["train", "decode", "shakespeare", "all"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, also on CPU")
    ap.add_argument("--size", choices=list(SIZES), default="gpt2", help="train: model size (default gpt2)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--bf16-cpu", action="store_true", help="bf16 autocast on the CPU too")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="+", default=None, metavar="TEXT",
                    help="decode: time only the rows whose names contain one of these (and HF's dynamic cache, the reference)")
    ap.add_argument("--no-one-row", action="store_true", help="decode: skip the run with attnkit.generation.use_one_row_linears")
    ap.add_argument("--compile-mode", default="reduce-overhead", choices=["reduce-overhead", "max-autotune"],
                    help="decode: torch.compile mode of attnkit's decode step")
    ap.add_argument("--data-root", type=Path, default=Path(os.environ.get("ATTNKIT_DATA", "data")),
                    help="shakespeare: the folder holding tinyshakespeare/input.txt (default: $ATTNKIT_DATA, else ./data)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="shakespeare: override the shakespeare-char recipe (passed to attnkit train lm --set)")
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--tag", default="", help="appended to the result file's name (several runs of one day)")
    args = ap.parse_args(argv)
    device = pick_device(args.device)
    parts = ["train", "decode", "shakespeare"] if args.what == "all" else [args.what]
    for part in parts:
        print(f"== {part} on {device} ==", flush=True)
        fn = {"train": train_bench, "decode": decode_bench, "shakespeare": shakespeare_bench}[part]
        t0 = time.perf_counter()
        result = fn(args, device)
        payload = {"benchmark": f"gpt-{part}", "environment": environment(device), "elapsed_s": time.perf_counter() - t0, **result}
        suffix = ("-quick" if args.quick else "") + (f"-{args.size}" if part == "train" and args.size != "gpt2" else "")
        suffix += f"-{args.tag}" if args.tag else ""
        path = write_json(f"gpt-{part}", payload, args.out_dir, suffix=suffix)
        summary = {k: v for k, v in result.items() if k in ("ratios", "best", "first_at_or_below_1.47", "matmul_peak_tflops")}
        if "results" in result:
            rows = [[n, f"{r['tokens_per_s']:,.0f}", f"{r.get('mfu') or r.get('bandwidth_bound_fraction') or 0:.3f}"] for n, r in result["results"].items()]
            print(markdown_table(["implementation", "tokens/s", "MFU or bandwidth fraction"], rows))
        print(json.dumps(summary, indent=1, default=str))
        print(f"wrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
