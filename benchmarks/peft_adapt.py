"""A character-level Shakespeare GPT adapted to a new text: LoRA against full fine-tuning.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/peft_adapt.py --data DATA                        # one GPU: the base, then both adaptations
    python benchmarks/peft_adapt.py --data DATA --steps 2000
    python benchmarks/peft_adapt.py --data DATA --set train.execution.cuda_graphs=true   # both steps replayed as CUDA graphs
    python benchmarks/peft_adapt.py --data DATA --quick --device cpu    # smoke run: tiny base, 6 steps each

The base is the ``shakespeare-char`` recipe (``DATA/tinyshakespeare/input.txt``), trained once;
the recipes ``shakespeare-multi30k-lora`` (LoRA r=8, alpha 16 on every linear layer of the
blocks, lr 1e-3) and ``shakespeare-multi30k-full`` (every weight, lr 3e-4) then continue it on
the English captions of Multi30k (``DATA/multi30k/train.en.gz``; characters Shakespeare lacks
read as ``<unk>``) for the same number of steps, through the one run path. Each row gives the
validation loss on the held-out 10% of the captions before adaptation and after it (the best
evaluation), the trainable parameters and the time of the adaptation, in three measures:

* ``step_ms``: the mean time of one optimizer step (forward, backward, clipping, AdamW) over the
  steps after the first logging window (so without the first steps' warm-up), from the Trainer's
  logging windows, which leave out evaluations and checkpoints (the host waits for the device
  at each window's end). The speed comparison of the two adaptations.
* ``train_s``: the same windows summed over every step: the training loop without evaluations
  (each with a 200-character sample, ``data.sample_tokens``) and checkpoints.
* ``wall_s``: the whole run around the one run path: loading the base, applying the adapter, the
  evaluation before the first step, the training loop, the evaluations (every 100 steps) with their samples,
  saving the best model, the final checkpoint and the loss plot.

Checks: the LoRA run's trainable count equals ``r * (d_in + d_out)`` summed over the adapted
layers of the base (counted from the base's own weight shapes), the base weights inside the LoRA
adapter equal the base's, and both runs start from the same validation loss. Results go to
``benchmarks/results/peft-adapt-<device>-<date>.json``, written after the base and after each
adaptation, so a run cut short keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

ADAPTATIONS = ("lora", "full")


def expected_lora_params(base: torch.nn.Module, r: int, targets: tuple[str, ...]) -> int:
    """``r * (d_in + d_out)`` for each adapted weight, from the base's linear layers (Q, K and V are row slices of ``qkv_proj``)."""
    total = 0
    for name, mod in base.named_modules():
        if not isinstance(mod, torch.nn.Linear) or name.endswith("lm_head"):
            continue
        d_out, d_in = mod.weight.shape
        if name.endswith("qkv_proj"):
            total += sum(r * (d_in + d_out // 3) for t in ("q", "k", "v") if t in targets)
        elif any(name.endswith(suffix) for t, suffix in (("o", "out_proj"), ("w1", "ffn.w1"), ("w2", "ffn.w2")) if t in targets):
            total += r * (d_in + d_out)
    return total


def base_weights_kept(base: torch.nn.Module, adapted_dir: Path) -> bool:
    """Whether every weight of ``base`` is in the saved LoRA model unchanged (an adapted layer keeps its weight as ``NAME.base``)."""
    import attnkit

    adapted = {k.replace(".base.", "."): v for k, v in attnkit.load(adapted_dir).state_dict().items()}
    return all(key in adapted and torch.equal(adapted[key].float().cpu(), value.float().cpu()) for key, value in base.state_dict().items())


def step_times(run_dir: Path, steps: int) -> dict[str, float | None]:
    """``train_s`` and ``step_ms`` (see the module) from the Trainer's logging windows in ``run_dir/metrics.jsonl``.

    Each training record covers the steps since the one before; its seconds are ``tokens / tokens_per_s``
    (the Trainer's window time, evaluations and checkpoints left out). ``step_ms`` is None with one window only.
    """
    windows, last = [], 0
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line) if line.strip() else {}
        if record.get("tokens_per_s"):
            windows.append((record["step"] - last, record["tokens"] / record["tokens_per_s"]))
            last = record["step"]
    if sum(n for n, _ in windows) != steps:
        raise RuntimeError(f"{run_dir / 'metrics.jsonl'}: logging windows cover {sum(n for n, _ in windows)} steps, not {steps}")
    later = windows[1:]
    return {"train_s": round(sum(t for _, t in windows), 3),
            "step_ms": round(1e3 * sum(t for _, t in later) / sum(n for n, _ in later), 3) if later else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the data root (tinyshakespeare/, multi30k/)")
    p.add_argument("--steps", type=int, default=0, help="adaptation steps of both runs (0: the recipes' 1,000)")
    p.add_argument("--device", default=None)
    p.add_argument("--quick", action="store_true", help="the recipes' quick variants (tiny base, a few steps)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="an assignment for both adaptations (not the base), e.g. train.execution.cuda_graphs=true; repeatable")
    p.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary directory)")
    p.add_argument("--out-dir", type=Path, default=None)
    args = p.parse_args(argv)

    import attnkit
    from attnkit import recipes
    from attnkit.runs import job
    from attnkit.runs.path import resolve_configs, run, run_stages

    device = common.pick_device(args.device)
    sets = [f"train.device={json.dumps(str(device))}"]
    if args.steps:
        sets.append(f"train.steps={args.steps}")
    tmp = None if args.work else tempfile.TemporaryDirectory()
    work = args.work or Path(tmp.name)  # type: ignore[union-attr]
    lm = job("lm")

    t0 = time.perf_counter()
    fed = run_stages(recipes.get("shakespeare-multi30k-lora"), work, quick=args.quick, root=args.data, progress=False,
                     log=lambda s: None, assignments=sets)
    base_s = time.perf_counter() - t0
    base_dir = work / "stages" / "shakespeare-char" / "model"
    base = attnkit.load(base_dir)
    base_eval = json.loads((work / "stages" / "shakespeare-char" / "eval.json").read_text())
    print(f"base: shakespeare-char validation loss {base_eval.get('loss'):.4f} ({base_s:.1f} s)")

    rows: dict[str, Any] = {}
    suffix = "-quick" if args.quick else ""
    payload: dict[str, Any] = {
        "benchmark": "peft_adapt",
        "command": " ".join(["python", "benchmarks/peft_adapt.py", *(argv if argv is not None else sys.argv[1:])]),
        "environment": common.environment(device),
        "quick": args.quick,
        "base": {"recipe": "shakespeare-char", "loss": base_eval.get("loss"), "steps": base_eval.get("steps"), "wall_s": round(base_s, 2)},
        "text": "multi30k/train.en.gz (English captions; unseen characters as <unk>)",
        "times": {"step_ms": "mean optimizer step (forward, backward, clipping, AdamW) after the first logging window; "
                             "evaluations and checkpoints excluded",
                  "train_s": "the training loop over every step, evaluations (with their samples) and checkpoints excluded",
                  "wall_s": "the whole run: loading the base, the adapter, the evaluation before step 1, the training loop, "
                            "every evaluation with its sample, the saved models and checkpoints, the loss plot"},
        "runs": rows,
    }
    common.write_json("peft-adapt", payload, args.out_dir, suffix=suffix)  # kept if a later run is cut short
    for name in ADAPTATIONS:
        recipe = recipes.get(f"shakespeare-multi30k-{name}")
        cfgs = resolve_configs(lm, recipe=recipe, quick=args.quick, root=args.data, assignments=[*fed, *sets, *args.sets], log=lambda s: None)
        t0 = time.perf_counter()
        report = run(lm, cfgs, work / name, progress=False, recipe=recipe.name, log=lambda s: None)
        wall = time.perf_counter() - t0
        f = dict(report.final)
        if f.get("trainable_params") is None:  # full fine-tuning: every parameter trains
            f.update(trainable_params=sum(q.numel() for q in base.parameters()), trainable_percent=100.0)
        times = step_times(work / name, report.result.step)
        rows[name] = {"start_loss": f.get("start_loss"), "loss": f.get("loss"), "best_step": f.get("best_step"),
                      "steps": cfgs["train"].steps, "trainable_params": f.get("trainable_params"),
                      "trainable_percent": f.get("trainable_percent"), "lr": cfgs["train"].optim.lr,
                      **times, "wall_s": round(wall, 2)}
        print(f"{name}: validation loss {f.get('start_loss'):.4f} -> {f.get('loss'):.4f}, {f.get('trainable_params'):,} trainable, "
              f"{times['step_ms']} ms per step, training loop {times['train_s']:.1f} s, whole run {wall:.1f} s")
        common.write_json("peft-adapt", payload, args.out_dir, suffix=suffix)  # kept if a later run is cut short

    peft_cfg = recipes.get("shakespeare-multi30k-lora").peft
    checks = {
        "lora_trainable_equals_r_times_dims": rows["lora"]["trainable_params"] == expected_lora_params(base, peft_cfg.r, peft_cfg.targets),
        "lora_base_weights_unchanged": base_weights_kept(base, work / "lora" / "model"),
        "same_start_loss": abs(rows["lora"]["start_loss"] - rows["full"]["start_loss"]) < 1e-4,
    }
    print("checks: " + ", ".join(f"{k}={v}" for k, v in checks.items()))
    payload["checks"] = checks
    path = common.write_json("peft-adapt", payload, args.out_dir, suffix=suffix)
    print(common.markdown_table(["run", "trainable", "val loss before", "val loss after", "ms per step", "training loop s", "whole run s"],
                                [[k, f"{v['trainable_params']:,} ({v['trainable_percent']:.2f}%)", f"{v['start_loss']:.4f}",
                                  f"{v['loss']:.4f}", f"{v['step_ms']}", f"{v['train_s']:.1f}", f"{v['wall_s']:.1f}"]
                                 for k, v in rows.items()]))
    print(f"wrote {path}")
    if tmp is not None:
        tmp.cleanup()
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
