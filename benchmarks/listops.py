"""Long Range Arena ListOps per attention kernel: test accuracy under a time budget, and LRA's speed table.

Run from the repository root (attnkit need not be installed):

    PYTHONPATH=. python benchmarks/listops.py                      # GPU: each kernel under the time budget, then the speed table
    python benchmarks/listops.py --quick --device cpu --results /tmp/lq  # the recipe's quick variant: a smoke test

Accuracy: the ``listops-small`` recipe (``attnkit recipes``: 4 layers, d_model 128, 4 heads,
d_ff 512, AdamW lr 1e-3, LRA's data sizes; ``--quick``: its quick variant) trained with each
kernel (``--set model.attention.kind=KIND``) through :func:`attnkit.runs.run`, as ``attnkit train
listops --recipe listops-small`` runs it; the generated data are cached once (``--cache``) and
shared by every kernel. Each kernel gets ``--minutes-per-kind`` of training: 30 steps on real
batches are timed first, and the run gets as many steps as fit in 85% of the budget (at most
``--max-steps``; the rest is left for the four validation passes), with warm-up 10% of the
steps and four evaluations (replacing the recipe's ``train.steps``, ``train.schedule.warmup``
and ``train.eval.every``). ``--set`` overrides the recipe for every kernel. Test accuracy is that
of the best model by validation accuracy. LRA's published ListOps accuracies (Tay et al. 2020,
table 1) are printed beside ours.

Speed: training steps/s (forward, backward, AdamW step; bf16 autocast on a GPU) of the same
model size ``--speed-preset`` (default ``lra-listops``, LRA's) on random tokens, batch ``--speed-batch``, lengths 1K-4K, no padding, each kernel relative
to ``scaled_dot`` at the same length; LRA's ratios (table 3, steps/s relative to the Transformer,
1K and 4K) beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from attnkit import recipes, runs  # noqa: E402
from attnkit.config import apply_overrides  # noqa: E402
from attnkit.models.encoder_classifier import classifier_preset  # noqa: E402
from attnkit.models.transformer import AttentionConfig  # noqa: E402
from attnkit.runs.listops import with_listops_attention  # noqa: E402
from attnkit.training.config import TrainConfig  # noqa: E402
from attnkit.training.listops import ListOpsTask, attention_config, build_model, make_splits  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)

# LRA (Tay et al. 2020) ListOps test accuracy, table 1, by the attnkit kernel of the same family.
LRA_ACCURACY = {
    "scaled_dot": ("Transformer", 36.37), "lsh": ("Reformer", 37.27), "bigbird": ("BigBird", 36.05),
    "linformer": ("Linformer", 35.70), "sliding_window": ("Longformer", 35.63), "global_window": ("Longformer", 35.63),
    "performer": ("Performer", 18.01), "strided": ("Sparse Transformer", 17.07), "fixed": ("Sparse Transformer", 17.07),
    "linear": ("Linear Transformer", 16.13),
}
LRA_OTHERS = [("Synthesizer", 36.99)]  # no attnkit kernel of that family
# LRA speed (table 3): steps/s relative to the Transformer at 1K and at 4K.
LRA_SPEED = {
    "sliding_window": ("local attention", 1.1, 5.3), "linear": ("Linear Transformer", 1.1, 5.6),
    "bigbird": ("BigBird", 0.9, 1.1), "lsh": ("Reformer", 0.5, 0.8),
}
DEFAULT_KINDS = "scaled_dot,sliding_window,bigbird,linear,performer"

RECIPE = "listops-small"  # attnkit recipes: the run behind the published ListOps figure


def model_config(args: argparse.Namespace, kind: str, max_len: int, preset: str) -> Any:
    """The speed table's model: ``preset`` with kernel ``kind`` (ListOps parameters) and the ``--set model.*`` overrides."""
    cfg = classifier_preset(preset).replace(max_len=max_len)
    cfg = cfg.replace(attention=AttentionConfig(**attention_config(kind, cfg.max_len)))
    return apply_overrides([a for a in args.set if a.startswith("model.")], {"model": cfg})["model"]


def recipe_configs(args: argparse.Namespace, device: torch.device, kind: str, cache: Path) -> dict[str, Any]:
    """The ``listops-small`` recipe's configs (quick variant with ``--quick``) with kernel ``kind``, the data cached in
    ``cache``, the device and ``--set`` applied together."""
    return runs.resolve_configs(
        runs.job("listops"), recipe=recipes.get(RECIPE, "listops"), quick=args.quick, cuda=device.type == "cuda",
        assignments=[f"model.attention.kind={kind}", f"data.cache={json.dumps(str(cache))}", f"train.device={device}",
                     "train.keep_checkpoints=1", *args.set],
    )


def seconds_per_step(model: torch.nn.Module, task: ListOpsTask, train_cfg: TrainConfig, device: torch.device, steps: int) -> float:
    """Seconds per training step on real batches: the median over the last ``steps - steps // 3`` of ``steps`` timed ones."""
    from attnkit.training.optim import build_optimizer

    model.to(device).train()
    o = train_cfg.optim
    opt = build_optimizer(model, "adamw", o.lr, o.betas, o.eps, o.weight_decay)
    times = []
    batches = _endless_batches(task, seed=12345)
    for _ in range(steps):
        b = next(batches)
        common.synchronize(device)
        t0 = time.perf_counter()
        with _autocast(device):
            loss, _ = task.loss(model, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        common.synchronize(device)
        times.append(time.perf_counter() - t0)
    tail = sorted(times[steps // 3 :])
    return tail[len(tail) // 2]


def _endless_batches(task: ListOpsTask, *, seed: int) -> Iterator[Any]:
    """The task's batches, epoch after epoch: a small training split has fewer batches than the probe has steps
    (one epoch alone ran out and raised ``StopIteration``, e.g. ``--set data.train_size=200`` with 30 probe steps)."""
    for epoch in itertools.count():
        produced = False
        for b in task.batches(epoch, seed):
            produced = True
            yield b
        if not produced:
            raise ValueError("the ListOps training split produced no batches; raise data.train_size")


def _autocast(device: torch.device) -> Any:
    """bf16 autocast on a GPU (as the Trainer's ``precision="auto"``), nothing on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def accuracy_runs(args: argparse.Namespace, device: torch.device, kinds: list[str], on_kind: Any = None) -> dict[str, Any]:
    """One run of the recipe per kernel; ``on_kind(partial)`` after each (a run cut short keeps the kernels done)."""
    out_root = Path(args.runs or tempfile.mkdtemp(prefix="listops-bench-"))
    cache = Path(args.cache or out_root / "data")
    base = recipe_configs(args, device, "scaled_dot", cache)
    splits = make_splits(base["data"], cache_dir=cache)  # generated once; every kernel's run reads the cached file
    results: dict[str, Any] = {}

    def summary() -> dict[str, Any]:
        return {"recipe": RECIPE, "overrides": args.set, "model": base["model"].to_dict(), "data": base["data"].to_dict(),
                "runs": results, "runs_dir": str(out_root)}

    for kind in kinds:
        if on_kind is not None and results:
            on_kind(summary())
        print(f"-- {kind} --", flush=True)
        t0 = time.perf_counter()
        try:
            cfgs = recipe_configs(args, device, kind, cache)
            mcfg, tcfg, dcfg = with_listops_attention(cfgs["model"]), cfgs["train"], cfgs["data"]
            torch.manual_seed(0)
            probe = build_model(mcfg)
            parameters = probe.num_parameters()
            task = ListOpsTask(splits["train"], splits["validation"], batch_size=tcfg.batch_size, pad_to=dcfg.pad_to,
                               bucket_size=dcfg.bucket_size, cls=mcfg.pool == "cls", device=device)
            sps = seconds_per_step(probe, task, tcfg, device, args.probe_steps)
            del probe
            steps = max(4, min(args.max_steps, int(0.85 * args.minutes_per_kind * 60 / sps)))
            budget = [f"train.steps={steps}", f"train.schedule.warmup={max(1, steps // 10)}", f"train.eval.every={max(1, steps // 4)}"]
            cfgs = apply_overrides(budget, cfgs)
            report = runs.run(runs.job("listops"), cfgs, out_root / kind, progress=False, recipe=RECIPE,
                              log=lambda s: print(s, flush=True))
        except Exception as e:  # one kernel failing must not lose the others' results
            print(f"{kind}: FAILED {type(e).__name__}: {e}", flush=True)
            results[kind] = {"error": f"{type(e).__name__}: {e}"}
            continue
        wall = time.perf_counter() - t0
        f, r = report.final, report.result
        results[kind] = {
            "test_accuracy": f["test_accuracy"], "test_loss": f["test_loss"],
            "best_validation_accuracy": f["best_validation_accuracy"], "best_step": f["best_step"],
            "steps": r.step, "budget": budget, "probe_s_per_step": sps, "train_seconds": r.seconds,
            "train_steps_per_s_with_eval": (r.step / r.seconds) if r.seconds else None, "wall_s": wall, "parameters": parameters,
            "attention": f["attention"], "validation": f["validation"],
        }
        print(f"{kind}: test accuracy {f['test_accuracy']:.4f} after {r.step} steps, {wall:.0f}s wall", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return summary()


def speed_table(args: argparse.Namespace, device: torch.device, kinds: list[str], lengths: list[int]) -> dict[str, Any]:
    from attnkit.objectives.classification import classification_loss
    from attnkit.training.optim import build_optimizer

    out: dict[str, dict[str, Any]] = {}
    gen = torch.Generator().manual_seed(0)
    for kind in kinds:
        out[kind] = {}
        for t in lengths:
            try:
                mcfg = model_config(args, kind, max(lengths), args.speed_preset)
                torch.manual_seed(0)
                model = build_model(mcfg).to(device).train()
                opt = build_optimizer(model, "adamw", 1e-4, (0.9, 0.98), 1e-8, 0.0)
                ids = torch.randint(2, 17, (args.speed_batch, t), generator=gen).to(device)
                labels = torch.randint(0, 10, (args.speed_batch,), generator=gen).to(device)

                def step(_i: int, model=model, opt=opt, ids=ids, labels=labels) -> None:
                    with _autocast(device):
                        loss, _ = classification_loss(model(ids).logits, labels)
                    loss.backward()
                    opt.step()
                    opt.zero_grad(set_to_none=True)

                timing = common.time_interleaved({kind: step}, device, warmup=args.speed_warmup, iters=args.speed_iters, rounds=1)[kind]
                out[kind][str(t)] = {"ms_per_step": timing.median_ms, "steps_per_s": 1e3 / timing.median_ms}
            except Exception as e:  # e.g. out of memory
                out[kind][str(t)] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            finally:
                model = opt = None  # noqa: F841
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            print(f"speed {kind} T={t}: {out[kind][str(t)]}", flush=True)
    for kind in kinds:
        for t in lengths:
            base, mine = out.get("scaled_dot", {}).get(str(t), {}), out[kind][str(t)]
            if "steps_per_s" in base and "steps_per_s" in mine:
                mine["relative_to_scaled_dot"] = mine["steps_per_s"] / base["steps_per_s"]
    return {"preset": args.speed_preset, "batch": args.speed_batch, "lengths": lengths, "results": out}


def print_tables(acc: dict[str, Any] | None, speed: dict[str, Any] | None) -> None:
    if acc:
        rows = []
        for kind, r in acc["runs"].items():
            lra = LRA_ACCURACY.get(kind)
            lra_text = f"{lra[1]:.2f} ({lra[0]})" if lra else "—"
            if "error" in r:
                rows.append([kind, "failed", "—", "—", "—", lra_text])
                continue
            rows.append([kind, f"{100 * r['test_accuracy']:.2f}", f"{100 * (r['best_validation_accuracy'] or 0):.2f}", str(r["steps"]),
                         f"{r['wall_s']:.0f}", lra_text])
        rows += [["—", "—", "—", "—", "—", f"{v:.2f} ({name})"] for name, v in LRA_OTHERS]
        print("\nListOps test accuracy (%), ours beside LRA's table 1\n")
        print(common.markdown_table(["kernel", "test acc", "best val acc", "steps", "wall s", "LRA (model)"], rows))
    if speed:
        lengths = speed["lengths"]
        rows = []
        for kind, per in speed["results"].items():
            cells = []
            for t in lengths:
                r = per[str(t)]
                cells.append(f"{r['steps_per_s']:.2f} ({r['relative_to_scaled_dot']:.2f}x)" if "relative_to_scaled_dot" in r
                             else f"{r['steps_per_s']:.2f}" if "steps_per_s" in r else "error")
            anchor = LRA_SPEED.get(kind)
            rows.append([kind, *cells, f"{anchor[1]}x / {anchor[2]}x ({anchor[0]})" if anchor else "—"])
        print(f"\nTraining steps/s ({speed['preset']}, batch {speed['batch']}; relative to scaled_dot), LRA table 3 at 1K / 4K beside\n")
        print(common.markdown_table(["kernel", *[f"T={t}" for t in lengths], "LRA 1K / 4K"], rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default=DEFAULT_KINDS, help=f"comma-separated attention kinds (default: {DEFAULT_KINDS})")
    ap.add_argument("--minutes-per-kind", type=float, default=1.2, help="training budget per kernel (default: 1.2)")
    ap.add_argument("--max-steps", type=int, default=5000, help="at most this many steps per kernel (default: 5000, LRA's)")
    ap.add_argument("--probe-steps", type=int, default=30, help="steps timed to size each run (default: 30)")
    ap.add_argument("--speed-lengths", default="1024,2048,3072,4096")
    ap.add_argument("--speed-kinds", default=None, help="kinds in the speed table (default: --kinds plus lsh)")
    ap.add_argument("--speed-preset", default="lra-listops", help="model of the speed table (default: lra-listops, LRA's size)")
    ap.add_argument("--speed-batch", type=int, default=8)
    ap.add_argument("--speed-warmup", type=int, default=3)
    ap.add_argument("--speed-iters", type=int, default=8)
    ap.add_argument("--no-accuracy", action="store_true", help="only the speed table")
    ap.add_argument("--no-speed", action="store_true", help="only the accuracy runs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override the listops-small recipe, e.g. --set model.mask_padding=false --set data.train_size=20000 "
                         "(model.* keys also reach the speed table's model)")
    ap.add_argument("--cache", type=Path, default=None, help="cache the generated data here")
    ap.add_argument("--runs", type=Path, default=None, help="keep each kernel's run directory here (default: a temporary one)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny model, short sequences, a few steps: a smoke test")
    ap.add_argument("--results", type=Path, default=None, help="where the JSON goes (default: benchmarks/results)")
    ap.add_argument("--tag", default="", help="appended to the result file's name")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    speed_kinds = [k for k in (args.speed_kinds or ",".join(kinds + (["lsh"] if "lsh" not in kinds else []))).split(",") if k]
    lengths = [int(x) for x in args.speed_lengths.split(",") if x]
    if args.quick:
        args.speed_preset = "listops-tiny"
        args.max_steps, args.probe_steps, args.minutes_per_kind = 6, 3, min(args.minutes_per_kind, 0.1)
        args.speed_batch, args.speed_warmup, args.speed_iters = 2, 1, 2
        lengths = [128, 256]
        if args.speed_kinds is None:
            speed_kinds = list(kinds)
    if "scaled_dot" not in speed_kinds:
        speed_kinds.insert(0, "scaled_dot")  # the reference of every ratio
    device = common.pick_device(args.device)
    if device.type == "cuda":
        for name in ("recompile_limit", "cache_size_limit"):  # FlexAttention compiles once per padded length
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, 256)
    t0 = time.perf_counter()
    env = common.environment(device)
    suffix = ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")

    def save(acc: dict[str, Any] | None, speed: dict[str, Any] | None) -> Path:  # after each part: a cut-short run keeps the first
        payload = {"benchmark": "listops", "environment": env, "elapsed_s": time.perf_counter() - t0, "quick": args.quick,
                   "recipe": RECIPE, "accuracy": acc, "speed": speed, "lra_accuracy": LRA_ACCURACY, "lra_speed": LRA_SPEED}
        return common.write_json("listops", payload, args.results, suffix=suffix)

    acc = None if args.no_accuracy else accuracy_runs(args, device, kinds, on_kind=lambda partial: save(partial, None))
    if acc is not None:
        save(acc, None)
        print_tables(acc, None)
    speed = None if args.no_speed else speed_table(args, device, speed_kinds, lengths)
    path = save(acc, speed)
    print_tables(None, speed)
    print(f"\nwrote {path} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
