"""ALBERT's shared layers against the same layers un-shared, fine-tuned on SST-2 from one small pretrained ALBERT.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/albert_unshare.py --data-root ../shared/data                        # one GPU: both parts
    python benchmarks/albert_unshare.py --data-root ../shared/data --parts pretrain       # the pretraining alone
    python benchmarks/albert_unshare.py --data-root ../shared/data --parts finetune --seeds 0 1 2
    python benchmarks/albert_unshare.py --quick --device cpu --data-root ../shared/data   # smoke run: quick recipes

Every run is a recipe on the one run path (``attnkit.runs.run``), as the CLI runs it, in ``--runs``:

1. **pretrain**: ``albert-small-mlm`` (Lan et al. 2020, section 3.1: factorised embeddings, one layer shared
   across depths, masked LM + sentence-order prediction): 6 layers of width 256,
   embeddings 128, a WordPiece vocabulary of 8,000 learned from SST-2's and RTE's training sentences and
   tiny Shakespeare, 2,000 steps of 128 sequences of 128 tokens (``--pretrain-steps`` changes the steps, the
   warm-up staying a tenth of them).
   Its held-out masked-LM and SOP scores, parameters, wall time and tokens per second are reported.
2. **finetune**: ``sst2-albert-small`` from that model for every seed of ``--seeds``, once as it is
   (``shared``: one layer applied at every depth) and once with ``model.share_layers=false``
   (``unshared``: the layer copied into independent layers at load, :func:`attnkit.models.bert.unshare_layers`),
   with the same recipe settings: 1,500 steps of 32 sentences (about 0.7 epoch; ``--finetune-steps``
   changes them), AdamW lr 1e-4, 10% warm-up, one evaluation on ``sst2/dev.tsv`` after the last step.
   ``train.seed`` and ``train.init_seed`` are the seed, so a seed fixes the fresh head, the batches
   and the dropout masks of both variants alike. Per run: dev accuracy, trainable parameters (the
   un-shared model has ``(n_layers - 1)`` layers' parameters more), the loss of the first step
   (computed before any update: equal for both variants of a seed when they start from the same
   function), training and wall seconds. Per variant: the accuracies, their mean and standard
   deviation; and the per-seed differences un-shared minus shared.

Results go to ``benchmarks/results/albert-unshare-<device>-<date>.json`` (``-quick`` in quick mode), written
after the pretraining and after each fine-tuning run. A file of that device and date is read first and only
what this call finishes is replaced, so the parts may run in separate calls. A finished run in ``--runs``
is reused (a fine-tuning run only if it started from the pretrained model there now); a pretraining run
stopped after a checkpoint is resumed, any other run folder left unfinished is refused with the path to delete.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

NAME = "albert-unshare"
PRETRAIN, FINETUNE = "albert-small-mlm", "sst2-albert-small"
VARIANTS: dict[str, tuple[str, ...]] = {"shared": (), "unshared": ("model.share_layers=false",)}
PARTS = ("pretrain", "finetune")
ROW = "benchmark_row.json"  # what a finished fine-tuning run reported, kept in its folder for reuse


def parse_parts(text: str) -> list[str]:
    """``--parts``: a comma-separated subset of :data:`PARTS` (``all``: both)."""
    return common.parse_parts(text, PARTS)


def weights_digest(model_dir: Path) -> str:
    """sha256 of a saved model's weight files: names the pretrained model a fine-tuning run started from."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.glob("*.safetensors")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def parameters(model: torch.nn.Module) -> int:
    """Trainable parameters, each tensor once (a shared layer counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(recipe: str, out: Path, args: argparse.Namespace, device: torch.device, assignments: list[str]) -> Any:
    """Run ``recipe`` into ``out``; returns the run's report, or None when ``out`` holds the finished run already.

    Raises:
        SystemExit: ``out`` holds a run stopped before its first checkpoint (delete it to train again).
    """
    from attnkit import recipes, runs

    if (out / "eval.json").is_file():
        return None
    resume = (out / "checkpoints" / "latest").exists()
    if (out / "run_config.json").exists() and not resume:
        raise SystemExit(f"{out} holds a run stopped before its first checkpoint; delete that folder to train it again")
    job = runs.job(recipes.get(recipe).task)
    cfgs = runs.resolve_configs(job, recipe=recipes.get(recipe), quick=args.quick, root=args.data_root, cuda=device.type == "cuda",
                                assignments=[f"train.device={device}", *assignments], log=lambda s: None)
    return runs.run(job, cfgs, out, resume=resume, progress=False, recipe=recipe, log=lambda s: None)


def pretrain(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Part 1: the small ALBERT, pretrained (or the finished run in ``--runs`` read back)."""
    import attnkit

    out = args.runs / "pretrain"
    # other steps keep the recipe's warm-up share (200 of 2,000)
    steps = [f"train.steps={args.pretrain_steps}", f"train.schedule.warmup={args.pretrain_steps // 10}"] if args.pretrain_steps else []
    t0 = time.perf_counter()
    report = train(PRETRAIN, out, args, device, steps)
    wall = time.perf_counter() - t0 if report is not None else None
    final = json.loads((out / "eval.json").read_text())
    config = json.loads((out / "run_config.json").read_text())
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in logs if "tokens_per_s" in r]
    model = attnkit.load(out / "model")
    m, t = config["model"], config["train"]
    row = {
        "recipe": PRETRAIN, "model_dir": str(out / "model"), "weights": weights_digest(out / "model"),
        "steps": final["steps"], "batch_size": t["batch_size"], "max_seq_len": config["data"]["max_seq_len"], "lr": t["optim"]["lr"],
        "model": {k: m[k] for k in ("n_layers", "d_model", "n_heads", "d_ff", "d_embed", "vocab_size", "share_layers")},
        "encoder_parameters": parameters(model.bert), "train_s": final["seconds"], "wall_s": None if wall is None else round(wall, 2),
        "reused": report is None, "tokens_per_s": statistics.median(rates[1:] or rates) if rates else None,
        "held_out": {k: final[k] for k in ("mlm_loss", "mlm_accuracy", "sop_loss", "sop_accuracy", "loss") if k in final},
    }
    h = row["held_out"]
    print(f"pretrain: {row['steps']} steps of {row['batch_size']} in {row['train_s']:.1f}s; held-out masked-LM accuracy "
          f"{h.get('mlm_accuracy', float('nan')):.4f}, SOP accuracy {h.get('sop_accuracy', float('nan')):.4f}"
          + (" (reused)" if row["reused"] else ""))
    return row


def finetune_one(variant: str, seed: int, base: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One fine-tuning run of ``variant`` and ``seed`` from the pretrained model ``base`` (reused when finished from it)."""
    import attnkit

    out = args.runs / f"sst2-{variant}-seed{seed}"
    if (out / ROW).is_file():
        row = json.loads((out / ROW).read_text())
        if row.get("pretrained_weights") != base["weights"]:
            raise SystemExit(f"{out} was fine-tuned from another pretrained model than {base['model_dir']}; delete it to run it again")
        return {**row, "reused": True}
    if (out / "eval.json").is_file():  # finished, but its report was never written: run it again
        raise SystemExit(f"{out} holds a finished run without {ROW}; delete that folder to run it again")
    steps = [f"train.steps={args.finetune_steps}", f"train.eval.every={args.finetune_steps}"] if args.finetune_steps else []
    assignments = [f"data.model={json.dumps(base['model_dir'])}", f"train.seed={seed}", f"train.init_seed={seed}", *steps,
                   *VARIANTS[variant]]
    t0 = time.perf_counter()
    report = train(FINETUNE, out, args, device, assignments)
    wall = time.perf_counter() - t0
    model = attnkit.load(out / "model")
    losses = report.result.losses
    layer = model.bert.layers[0]
    row = {
        "variant": variant, "seed": seed, "dev_accuracy": float(report.final["accuracy"]), "dev_loss": float(report.final["loss"]),
        "steps": report.result.step, "batch_size": report.configs["train"].batch_size, "lr": report.configs["train"].optim.lr,
        "trainable_parameters": parameters(model), "n_layers": model.bert.config.n_layers,
        "share_layers": model.bert.config.share_layers, "distinct_layers": len({id(x) for x in model.bert.layers}),
        "layer_parameters": sum(p.numel() for p in layer.parameters()),
        "first_losses": losses[:5], "last_loss": statistics.fmean(losses[-100:]),
        "train_s": round(report.result.seconds, 2), "wall_s": round(wall, 2), "pretrained_weights": base["weights"],
    }
    (out / ROW).write_text(json.dumps(row, indent=2) + "\n")
    print(f"{variant:8s} seed {seed}: SST-2 dev accuracy {row['dev_accuracy']:.4f}; {row['trainable_parameters']:,} trainable "
          f"parameters; first-step loss {losses[0]:.6f}; {row['train_s']:.1f}s training, {row['wall_s']:.1f}s in all")
    return {**row, "reused": False}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant: accuracies by seed, mean and sample standard deviation; per seed: un-shared minus shared."""
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["seed"])
        if not mine:
            continue
        accs = [r["dev_accuracy"] for r in mine]
        out[variant] = {"seeds": [r["seed"] for r in mine], "dev_accuracy": accs, "mean": statistics.fmean(accs),
                        "std": statistics.stdev(accs) if len(accs) > 1 else None,
                        "trainable_parameters": mine[0]["trainable_parameters"],
                        "train_s_mean": statistics.fmean(r["train_s"] for r in mine)}
    shared = {r["seed"]: r for r in rows if r["variant"] == "shared"}
    unshared = {r["seed"]: r for r in rows if r["variant"] == "unshared"}
    seeds = sorted(set(shared) & set(unshared))
    if seeds:
        s, u = shared[seeds[0]], unshared[seeds[0]]
        out["unshared_minus_shared"] = {
            "seeds": seeds, "dev_accuracy": [unshared[k]["dev_accuracy"] - shared[k]["dev_accuracy"] for k in seeds],
            "mean": statistics.fmean(unshared[k]["dev_accuracy"] - shared[k]["dev_accuracy"] for k in seeds),
            "extra_parameters": u["trainable_parameters"] - s["trainable_parameters"],
            "expected_extra_parameters": (s["n_layers"] - 1) * s["layer_parameters"],
            # the loss of each seed's first step, before any update: 0 when both variants start from the same function
            "first_loss_gap": [abs(unshared[k]["first_losses"][0] - shared[k]["first_losses"][0]) for k in seeds],
        }
    return out


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=Path("../shared/data"), help="holds sst2/, rte/ and tinyshakespeare/")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: CUDA when present)")
    p.add_argument("--parts", "--part", type=parse_parts, default=list(PARTS),
                   help="comma-separated parts: pretrain, finetune (which pretrains first if --runs holds no pretrained model); "
                        "default both")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds (default 0 1 2)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="pretraining steps (default: the albert-small-mlm recipe's 2,000)")
    p.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps (default: the sst2-albert-small recipe's 1,500)")
    p.add_argument("--runs", type=Path, default=None,
                   help="where the runs go, finished ones reused (default runs/albert-unshare, runs/albert-unshare-quick with --quick)")
    p.add_argument("--quick", action="store_true", help="the recipes' quick variants, a few steps: checks the script, not accuracy")
    p.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default benchmarks/results)")
    args = p.parse_args(argv)
    for flag, value in (("--pretrain-steps", args.pretrain_steps), ("--finetune-steps", args.finetune_steps)):
        if value is not None and value < 1:
            p.error(f"{flag} {value}: give a positive number of steps")
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds {' '.join(map(str, args.seeds))}: each seed once")
    if not (args.data_root / "sst2" / "train.tsv").is_file():
        p.error(f"--data-root {args.data_root}: no sst2/train.tsv there; give the folder that holds sst2/, rte/ and tinyshakespeare/")
    args.runs = args.runs or Path("runs") / (NAME + ("-quick" if args.quick else ""))
    device = common.pick_device(args.device)
    env = common.environment(device)
    suffix = "-quick" if args.quick else ""
    payload = common.read_day_json(NAME, env, args.out_dir, suffix=suffix)
    payload.update(environment=env, quick=args.quick)
    commands: dict[str, str] = payload.setdefault("commands", {})

    def save(part: str, key: str, value: Any) -> Path:
        payload[key] = value
        commands[part] = env["command"]
        return common.write_json(NAME, payload, args.out_dir, suffix=suffix)

    def pretrained() -> dict[str, Any]:
        """Part 1's row; a reused run keeps the row of the call that trained it (its wall time) when the JSON has it."""
        row = pretrain(args, device)
        earlier = payload.get("pretrain", {})
        if row["reused"] and earlier.get("weights") == row["weights"]:
            return earlier
        save("pretrain", "pretrain", row)
        return row

    base = pretrained() if "pretrain" in args.parts or not (args.runs / "pretrain" / "eval.json").is_file() else None
    if "finetune" in args.parts:
        base = base or pretrained()
        old = payload.get("finetune", {}).get("runs", [])
        done: dict[tuple[str, int], dict[str, Any]] = {
            (r["variant"], r["seed"]): r for r in old if isinstance(r, dict) and r.get("pretrained_weights") == base["weights"]}

        def save_runs() -> Path:
            rows = [done[k] for k in sorted(done, key=lambda k: (k[1], k[0]))]
            return save("finetune", "finetune", {"recipe": FINETUNE, "pretrained": base["model_dir"], "pretrained_weights": base["weights"],
                                                 "runs": rows, "summary": summarise(rows)})

        for seed in args.seeds:
            for variant in VARIANTS:
                done[(variant, seed)] = finetune_one(variant, seed, base, args, device)
                save_runs()
        s = summarise(list(done.values()))
        for variant in VARIANTS:
            if variant in s:
                v = s[variant]
                std = "n/a" if v["std"] is None else f"{v['std']:.4f}"
                print(f"{variant:8s} SST-2 dev accuracy {', '.join(f'{a:.4f}' for a in v['dev_accuracy'])}: mean {v['mean']:.4f}, "
                      f"std {std}; {v['trainable_parameters']:,} trainable parameters")
        if "unshared_minus_shared" in s:
            d = s["unshared_minus_shared"]
            print(f"un-shared minus shared: {d['mean']:+.4f} mean over seeds {d['seeds']}; +{d['extra_parameters']:,} parameters")
    path = common.results_path(NAME, env, args.out_dir, suffix=suffix)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
