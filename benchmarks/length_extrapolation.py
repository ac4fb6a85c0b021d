"""Length extrapolation (Press et al. 2022, section 4, at character scale): train at one context, evaluate longer.

    python benchmarks/length_extrapolation.py --data-root ../shared/data             # GPU: context 256, eval to 4k
    python benchmarks/length_extrapolation.py --data-root ../shared/data --quick     # CPU smoke: context 32, eval to 128
    python benchmarks/length_extrapolation.py --data-root ../shared/data --kinds rotary --yarn-finetune 200  # + YaRN fine-tune

Each ``length-extrapolation-<kind>`` recipe (:mod:`attnkit.recipes.positions`) is trained through the one run
path into ``--runs/<recipe>`` (a finished run is reused), then its saved model is evaluated on the validation
split at 1x, 2x, 4x, 8x and 16x the training context: the mean next-token loss over non-overlapping windows
of that length, every token of a window counted (the paper's non-overlapping evaluation). A model whose
attention carries positions is rebuilt with the longer context and the same weights; learned absolute
positions have no rows past the training context, so their longer lengths are left empty. The rotary model
is also evaluated with NTK-aware and YaRN scaling by the length ratio (no retraining).

``--yarn-finetune STEPS`` adds YaRN as its paper applies it (Peng et al. 2023, section 4): the trained rotary
model is continued, through the same run path into a run directory of its own (``data.model`` with
``data.adjust``; the rotary run is only read), with YaRN scale s = 16 (the longest evaluation over the
training context, ``original_max_len`` the training context) at half the longest evaluation length, 8x the
training context, for STEPS optimizer steps. The batch holds the pretraining's tokens per step (batch size
/ 8), the learning rate is the one the pretraining ended at (its peak times ``min_lr_ratio``), and the
warm-up is a twentieth of the steps, as the paper's 20 of 400. That model is evaluated at every length with
its own scaling (s = 16 throughout) as the row ``rotary-yarn-ft``; the JSON's ``yarn_finetune`` records its
steps, context, factor, batch and learning rate, and its training tokens as a fraction of the pretraining's.

Writes ``benchmarks/results/length-extrapolation-<device>-<date>.json`` and a PNG plot beside it; a file of that
device and date is read first and only the kinds run are replaced, so kinds may run in separate (or concurrent)
calls, each ``--kinds`` a few.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attnkit  # noqa: E402
from attnkit import recipes, runs  # noqa: E402
from attnkit.data.text import encode, read_text, split_tokens  # noqa: E402
from attnkit.data.tokenizer import load_tokenizer  # noqa: E402
from attnkit.models.gpt import GPT  # noqa: E402
from attnkit.recipes.positions import KINDS  # noqa: E402
from attnkit.runs.path import resolve_configs, run  # noqa: E402
from benchmarks.common import environment, pick_device, update_day_json  # noqa: E402

FACTORS = (1, 2, 4, 8, 16)
FINETUNE_LENGTH = 8  # the YaRN fine-tune's context over the training context: half the longest evaluation (Peng et al. 2023, section 4)
ADJUST = ["context", "attention.position.scaling", "attention.position.factor", "attention.position.original_max_len"]


def train(name: str, out: Path, root: str, quick: bool, device: torch.device, extra: list[str]) -> Path:
    """Train recipe ``name`` into ``out`` (or reuse a finished run); return the model directory."""
    if (out / "eval.json").exists():
        return out / "model"
    recipe = recipes.get(name)
    job = runs.job(recipe.task)
    assignments = [f"train.device={device}", *extra]
    configs = resolve_configs(job, recipe=recipe, assignments=assignments, quick=quick, cuda=device.type == "cuda", root=root)
    run(job, configs, out, recipe=name, progress=False, resume=(out / "run_config.json").exists())
    return out / "model"


def yarn_finetune(source: Path, out: Path, root: str, quick: bool, device: torch.device, extra: list[str], steps: int
                  ) -> tuple[Path, dict[str, Any]]:
    """Continue the rotary run ``source`` into ``out`` with YaRN at :data:`FINETUNE_LENGTH` times its context (or reuse
    a finished run); return the model directory and the fine-tune's settings, its tokens against the pretraining's."""
    name = "length-extrapolation-rotary"
    before = json.loads((source / "run_config.json").read_text())
    t, context = before["train"], before["model"]["context"]
    factor = float(FACTORS[-1])
    batch = max(1, t["batch_size"] // FINETUNE_LENGTH)
    lr = t["optim"]["lr"] * t["schedule"]["min_lr_ratio"]
    if not (out / "eval.json").exists():
        recipe = recipes.get(name)
        job = runs.job(recipe.task)
        assignments = [
            f"train.device={device}", *extra, f"data.model={json.dumps(str(source / 'model'))}", f"data.adjust={json.dumps(ADJUST)}",
            f"model.context={FINETUNE_LENGTH * context}", "model.attention.position.scaling=yarn",
            f"model.attention.position.factor={factor}", f"model.attention.position.original_max_len={context}",
            f"train.steps={steps}", f"train.batch_size={batch}", f"train.optim.lr={lr}",
            f"train.schedule.warmup={max(1, steps // 20)}",
        ]
        configs = resolve_configs(job, recipe=recipe, assignments=assignments, quick=quick, cuda=device.type == "cuda", root=root)
        run(job, configs, out, recipe=name, progress=False, resume=(out / "run_config.json").exists())
    after = json.loads((out / "run_config.json").read_text())

    def tokens(run_dir: Path, cfg: dict[str, Any]) -> int:
        done = json.loads((run_dir / "eval.json").read_text())["steps"]
        return done * cfg["train"]["batch_size"] * cfg["train"]["grad_accum"] * cfg["model"]["context"]

    pre, ft = tokens(source, before), tokens(out, after)
    position = after["model"]["attention"]["position"]
    return out / "model", {
        "steps": json.loads((out / "eval.json").read_text())["steps"], "context": after["model"]["context"],
        "scaling": position["scaling"], "factor": position["factor"], "original_max_len": position["original_max_len"],
        "batch_size": after["train"]["batch_size"], "lr": after["train"]["optim"]["lr"], "run": out.name,
        "tokens": ft, "pretrain_tokens": pre, "token_fraction": round(ft / pre, 4),
    }


def at_length(model: GPT, length: int, position: dict[str, Any] | None = None) -> GPT | None:
    """``model`` rebuilt for ``length`` tokens with the same weights (None: learned positions cannot)."""
    c = model.config
    if c.learned_positions:
        return model if length <= c.context else None
    attention = c.attention if position is None else c.attention.replace(position=c.attention.position.replace(**position))
    longer = GPT(dataclasses.replace(c, context=max(length, c.context), attention=attention))
    longer.load_state_dict(model.state_dict())
    return longer.to(next(model.parameters()).device).eval()


@torch.no_grad()
def window_loss(model: GPT, tokens: torch.Tensor, length: int, device: torch.device, batch_tokens: int) -> tuple[float, int]:
    """Mean next-token loss over the non-overlapping windows of ``length + 1`` tokens; and the window count."""
    n = (tokens.numel() - 1) // length
    if n == 0:
        return float("nan"), 0
    x = tokens[: n * length].view(n, length)
    y = tokens[1 : n * length + 1].view(n, length)
    per_batch = max(1, batch_tokens // length)
    total = 0.0
    for a in range(0, n, per_batch):
        xb, yb = x[a : a + per_batch].to(device), y[a : a + per_batch].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(xb).logits
        total += F.cross_entropy(logits.float().flatten(0, 1), yb.flatten(), reduction="sum").item()
    return total / (n * length), n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="../shared/data", help="holds tinyshakespeare/input.txt")
    p.add_argument("--runs", default="runs/length-extrapolation", help="where the trained runs go (reused when finished)")
    p.add_argument("--quick", action="store_true", help="the recipes' quick variants (CPU, seconds): context 32, 20 steps")
    p.add_argument("--device", default=None)
    p.add_argument("--kinds", nargs="*", default=list(KINDS), choices=list(KINDS))
    p.add_argument("--set", dest="assignments", action="append", default=[], help="extra key=value for every recipe")
    p.add_argument("--batch-tokens", type=int, default=32768, help="tokens per evaluation batch")
    p.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--yarn-finetune", type=int, default=0, metavar="STEPS",
                   help="with rotary: continue it this many steps with YaRN (s=16) at 8x its context, row rotary-yarn-ft "
                        "(0: off; 200 on the GPU)")
    args = p.parse_args(argv)
    if args.yarn_finetune < 0:
        p.error(f"--yarn-finetune {args.yarn_finetune}: give a number of steps >= 0 (0: off)")
    if args.yarn_finetune and "rotary" not in args.kinds:
        p.error("--yarn-finetune continues the rotary model; add rotary to --kinds")
    device = pick_device(args.device)
    env = environment(device)
    root = Path(args.runs) / ("quick" if args.quick else "full")
    rows: dict[str, dict[str, Any]] = {}
    train_seconds: dict[str, float] = {}
    merged: dict[str, dict[str, Any]] = {}  # every row of the day's file after the last write (this call's and others')
    finetunes: dict[str, dict[str, Any]] = {}  # row -> the fine-tune behind it
    context = 0

    def save(labels: list[str], kind: str) -> None:
        """Write this kind's rows into the day's JSON (kinds that other calls wrote, also concurrently, are kept), then
        the plot of every row the file holds."""
        lengths = [f * context for f in FACTORS]

        def update(disk: dict[str, Any]) -> None:
            if disk.get("train_context", context) != context or disk.get("quick", args.quick) != args.quick:
                disk.clear()  # another setting's rows do not belong in one table
            disk.update({"benchmark": "length-extrapolation", "quick": args.quick, "train_context": context, "lengths": lengths})
            disk.setdefault("validation_loss", {}).update({label: rows[label] for label in labels})
            disk.setdefault("train_seconds", {}).update({k: round(train_seconds[k], 1) for k in (kind, *labels) if k in train_seconds})
            for label in labels:
                if label in finetunes:
                    disk.setdefault("yarn_finetune", {})[label] = finetunes[label]
            disk.setdefault("commands", {})[kind] = " ".join([sys.executable, *sys.argv])
            merged.clear()
            merged.update(disk["validation_loss"])

        name = "length-extrapolation" + ("-quick" if args.quick else "")
        path = update_day_json(name, env, update, Path(args.out_dir) if args.out_dir else None)
        plot(merged, lengths, context, path.with_suffix(".png"))
        print(f"wrote {path} and {path.with_suffix('.png')}")

    for kind in args.kinds:
        name = f"length-extrapolation-{kind}"
        start = time.perf_counter()
        model_dir = train(name, root / name, args.data_root, args.quick, device, args.assignments)
        train_seconds[kind] = time.perf_counter() - start
        model = attnkit.load(model_dir).to(device).eval()
        tok = load_tokenizer(model_dir / "tokenizer.json")
        context = model.config.context
        data = recipes.get(name).data
        text = read_text(str(Path(args.data_root) / data.text))
        _, valid = split_tokens(encode(tok, text), context, data.train_fraction)
        variants: dict[str, dict[str, Any] | None] = {kind: None}
        models = {kind: model}
        if kind == "rotary":
            variants["rotary-ntk"] = {"scaling": "ntk"}
            variants["rotary-yarn"] = {"scaling": "yarn", "original_max_len": context}
            if args.yarn_finetune:
                label = "rotary-yarn-ft"
                start = time.perf_counter()
                ft_dir, finetunes[label] = yarn_finetune(root / name, root / f"{name}-yarn-ft{args.yarn_finetune}", args.data_root,
                                                         args.quick, device, args.assignments, args.yarn_finetune)
                train_seconds[label] = time.perf_counter() - start
                models[label] = attnkit.load(ft_dir).to(device).eval()
                variants[label] = None  # its own scaling (YaRN, s=16) at every length
                print(f"{label}: {finetunes[label]['steps']} steps at context {finetunes[label]['context']}, YaRN s="
                      f"{finetunes[label]['factor']:g}; {finetunes[label]['token_fraction']:.1%} of the pretraining tokens", flush=True)
        for label, scaling in variants.items():
            rows[label] = {}
            for f in FACTORS:
                length = f * context
                extra = None if scaling is None else ({**scaling, "factor": float(f)} if f > 1 else None)
                m = at_length(models.get(label, model), length, extra)
                loss, windows = (float("nan"), 0) if m is None else window_loss(m, valid, length, device, args.batch_tokens)
                rows[label][str(length)] = None if math.isnan(loss) else round(loss, 4)
                print(f"{label:>14} @ {length:>5}: {'-' if m is None else f'{loss:.4f}'} ({windows} windows)", flush=True)
        save(list(variants), kind)
    return 0


def plot(rows: dict[str, dict[str, Any]], lengths: list[int], context: int, path: Path) -> None:
    """Validation loss against evaluation length, one line per positional kind, log-2 length axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, losses in rows.items():
        pts = [(n, losses[str(n)]) for n in lengths if losses.get(str(n)) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.axvline(context, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"evaluation length (trained at {context})")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title("Length extrapolation, tiny Shakespeare characters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
