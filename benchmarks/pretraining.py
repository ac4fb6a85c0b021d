"""The pretraining family on one GPU: throughput per objective, then ELECTRA against masked LM at equal wall time.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/pretraining.py --data-root DATA                          # one GPU: every part
    python benchmarks/pretraining.py --data-root DATA --parts throughput       # the throughput table only
    python benchmarks/pretraining.py --data-root DATA --parts translation      # Multi30k BLEU: random init vs BART / MASS
    python benchmarks/pretraining.py --data-root DATA --parts electra-vs-mlm --corpus shakespeare  # on tiny Shakespeare alone
    python benchmarks/pretraining.py --quick --device cpu --data-root DATA     # smoke run: quick recipes, a few steps

Every measurement is a run of a recipe on the one run path (``attnkit.runs.run``), as the CLI runs it,
on tiny Shakespeare (``DATA/tinyshakespeare/input.txt``) unless said otherwise:

* **throughput**: each objective trains ``--steps`` steps (no evaluation) and the Trainer's logged
  tokens per second (input tokens, padding excluded) are read from ``metrics.jsonl``; the median over
  the logs after the first is reported. The encoders (masked LM, ELECTRA, UniLM, XLNet) are ELECTRA-Small's
  discriminator shape (12 layers, d_model 256, embeddings 128; ELECTRA adds its 1/4-width generator,
  XLNet has no embedding projection and runs two streams);
  the encoder-decoders (T5, BART, MASS) the denoising recipes' 3+3-layer pre-norm Transformer (d_model
  256); the decoders the ``shakespeare-char`` GPT (6 layers, d_model 384) dense and with 8 Switch
  experts in every FFN (the same active parameters per token), the latter also with the grouped
  dispatch (``gpt-switch-grouped``: ``model.moe.dispatch=grouped``). MFU is ``6 * N * tokens/s`` over the
  card's dense bf16 peak, with ``N`` the non-embedding parameters that process each token (ELECTRA:
  generator plus discriminator; Switch: one expert per layer); attention scores are not counted, so it
  is a lower bound. One evaluation after the last step gives each objective's held-out scores
  (``final_eval``; for the Switch GPT also ``moe_load_cv``, the coefficient of variation of the expert
  load, and ``moe_dropped``), so the dense and Switch GPTs compare on validation loss at equal steps.
* **electra-vs-mlm**: masked LM and ELECTRA, both on the same ELECTRA-Small encoder, pretrain from
  scratch for ``--minutes`` each (the step count is set from the throughput measured in the first part,
  on tiny Shakespeare, whose short speeches fill less of each sequence than the mixed corpus's documents do, so
  a step on the mixed corpus can take longer; ``pretrain_wall_s`` records the time taken) on
  the corpus ``--corpus`` names (:data:`CORPORA`, files under ``--data-root``, given to both objectives
  as one ``data.text=[...]`` assignment): ``mixed`` (the default) is the English sentences of SST-2's
  training split, Multi30k's English training captions, XQuAD's English passages and questions, RTE's
  training pairs, WNUT-17's training tweets and tiny Shakespeare, about seven times tiny Shakespeare's
  text, so the same steps read each sentence about a seventh as often; ``shakespeare`` is the recipes'
  own tiny Shakespeare. Tiny Shakespeare comes last, so the held-out documents (the last
  ``data.valid_fraction`` of them) are its last ones with either corpus and the held-out scores compare.
  Then each encoder is fine-tuned on SST-2 with the ``sst2-minilm`` recipe's settings (without its
  task-adaptive stage; ``--finetune-epochs`` replaces its 3 epochs) for every seed of ``--seeds``; dev accuracy
  per seed and the mean are reported, with each pretraining's scores after its last step (``pretrain_final``;
  ELECTRA's ``disc_over_constant`` is its discriminator's accuracy less that of always answering 'original',
  ``disc_loss_constant`` the loss of always answering the replaced fraction, which ``disc_loss`` must get below;
  ``disc_auc`` the area under the discriminator's ROC curve on the held-out tokens, 0.5 for no signal).
  ``--pretrain-set KEY=VALUE`` changes the pretraining (e.g. ``train.optim.lr=2e-4``) at the same step count;
  ``--finetune-set KEY=VALUE`` changes the SST-2 fine-tuning of both (e.g. ELECTRA-Small's ``train.optim.lr=3e-4``
  and ``train.optim.layer_decay=0.8``, Clark et al. 2020, appendix), named in the entry as ``finetune KEY=VALUE``.
  ``--set KEY=VALUE`` (an execution setting such as ``train.execution.cuda_graphs=true``) applies to the
  throughput rows and to the pretraining alike: the steps then come from the rows measured with the same
  ``--set`` assignments, so both objectives get the minutes at the speed they run at under them.
  An entry is named by its objective, then its corpus in parentheses unless it is tiny Shakespeare, then its
  ``--set`` and ``--pretrain-set`` assignments: ``electra``, ``mlm (mixed)``, ``electra (mixed) [train.optim.lr=2e-4]``; so entries of other
  corpora and settings are kept beside each other. Each entry records ``corpus`` (its name) and
  ``corpus_files`` (its files, relative to the data root); an entry without them pretrained on tiny Shakespeare.
* **translation**: the ``multi30k-de-en`` recipe from random initialisation, and ``multi30k-de-en-bart`` /
  ``multi30k-de-en-mass`` (the same translation run after denoising the Multi30k training sentences of both
  languages with that Transformer, ``bart-multi30k`` / ``mass-multi30k``): test BLEU (cased and lowercased)
  of each, with the same fine-tuning steps. Reads ``DATA/multi30k/``.

Results go to ``benchmarks/results/pretraining-<device>-<date>.json``, written after each objective's
throughput, each SST-2 seed and each translation run. A file of that device and date is read first and
only what this call finishes is replaced (a throughput row is one objective with one set of ``--set``
assignments), under a file lock, so parts run in separate or concurrent calls
end up in one file (``--compare`` and ``--translations`` split a part's runs between calls); the
electra-vs-mlm part takes masked LM's and ELECTRA's steps per second from the throughput rows there
with this call's ``--set`` assignments (none: rows without assignments), and measures them first otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

# dense bf16 tensor-core peaks (no sparsity), FLOP/s
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12}
SWITCH = ("model.ffn=switch", "model.moe.n_experts=8")
# name -> (task, recipe, base model preset kind, extra assignments)
OBJECTIVES: dict[str, tuple[str, str, str | None, tuple[str, ...]]] = {
    "mlm": ("mlm", "bert-mlm-from-scratch", "electra-small", ()),
    "electra": ("electra", "electra-shakespeare", "electra-small", ()),
    "unilm": ("unilm", "unilm-shakespeare", "electra-small", ()),
    "xlnet": ("xlnet", "xlnet-shakespeare", "electra-small", ()),
    "t5": ("t5", "t5-shakespeare", None, ()),
    "bart": ("bart", "bart-shakespeare", None, ()),
    "mass": ("mass", "mass-shakespeare", None, ()),
    "gpt-dense": ("lm", "shakespeare-char", None, ("data.sample_tokens=0", "train.reg.ema_decay=0.0")),
    "gpt-switch": ("lm", "shakespeare-char", None, ("data.sample_tokens=0", "train.reg.ema_decay=0.0", *SWITCH)),
    "gpt-switch-grouped": ("lm", "shakespeare-char", None, ("data.sample_tokens=0", "train.reg.ema_decay=0.0", *SWITCH,
                                                          "model.moe.dispatch=grouped")),
}
# electra-vs-mlm's pretraining text, files under --data-root; tiny Shakespeare last, so the held-out documents
# (the last valid_fraction of them) are tiny Shakespeare's last ones whichever corpus trains
CORPORA: dict[str, tuple[str, ...]] = {
    "mixed": ("sst2/train.tsv", "multi30k/train.en.gz", "squad/xquad.en.json", "rte/train.tsv", "wnut17/wnut17train.conll",
              "tinyshakespeare/input.txt"),
    "shakespeare": ("tinyshakespeare/input.txt",),
}
RECIPE_CORPUS = "shakespeare"  # the recipes' own data.text: entries pretrained on it carry no corpus in their names


def peak_flops(device: torch.device) -> float | None:
    """The card's dense bf16 peak, from its name (None on the CPU or an unknown card)."""
    if device.type != "cuda":
        return None
    name = common.device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def base_model(kind: str | None, quick: bool) -> dict[str, Any] | None:
    """The shared encoder shape: ELECTRA-Small's discriminator (the quick variant keeps the recipe's tiny model)."""
    if kind is None or quick:
        return None
    from attnkit.models.bert import bert_preset

    return {"model": bert_preset("electra-small-discriminator")}


def active_parameters(model: torch.nn.Module) -> int:
    """Parameters that process each token: all but embeddings and the output table, one expert per Switch layer."""
    from attnkit.layers.moe import SwitchFFN

    total = 0
    for name, p in {n: p for n, p in model.named_parameters()}.items():
        if "embed" in name or "tokens" in name or "positions" in name or "segments" in name or "lm_head" in name or "decoder.weight" in name:
            continue
        total += p.numel()
    for m in model.modules():
        if isinstance(m, SwitchFFN):
            per_expert = sum(p[0].numel() for p in (*m.w1.parameters(), *m.w2.parameters()))  # one slice of the stacked experts
            total -= per_expert * (m.n_experts - 1)
    return total


def run_recipe(name: str, out: Path, *, quick: bool, root: Path, device: torch.device, assignments: list[str]) -> Any:
    """One objective's recipe through the run path; returns the report."""
    from attnkit import recipes, runs

    task, recipe, kind, extra = OBJECTIVES[name]
    job = runs.job(task)
    cfgs = runs.resolve_configs(job, recipe=recipes.get(recipe), quick=quick, root=root, base=base_model(kind, quick),
                                assignments=[*extra, f"train.device={device}", *assignments])
    return runs.run(job, cfgs, out, progress=False, log=lambda s: None)


def throughput(name: str, tmp: Path, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Tokens/s (median of the logged windows after the first) and MFU of one objective."""
    import attnkit

    steps = 6 if args.quick else args.steps
    every = 2 if args.quick else max(steps // 8, 1)
    out = tmp / name
    t0 = time.perf_counter()
    report = run_recipe(name, out, quick=args.quick, root=args.data_root, device=device,
                        assignments=[f"train.steps={steps}", f"train.log_every={every}", f"train.eval.every={steps}", "train.save_every=0",
                                     *args.set])
    wall = time.perf_counter() - t0
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in logs if "tokens_per_s" in r][1:] or [r["tokens_per_s"] for r in logs if "tokens_per_s" in r]
    tok_s = statistics.median(rates)
    evals = [r for r in logs if any(k.startswith("eval/") for k in r)]
    final_eval = {k[5:]: v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {}
    model = attnkit.load(report.model_dir)
    n = active_parameters(model)
    peak = peak_flops(device)
    row = {"objective": name, "task": OBJECTIVES[name][0], "recipe": OBJECTIVES[name][1], "steps": steps,
           "batch_size": report.configs["train"].batch_size, "tokens_per_s": tok_s, "steps_per_s": tok_s / max(_tokens_per_step(logs, every), 1),
           "active_parameters": n, "mfu": 6 * n * tok_s / peak if peak else None, "seconds": round(wall, 2),
           "final_eval": final_eval, "overrides": list(args.set)}
    mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
    print(f"{name:11s} {tok_s:12,.0f} tokens/s  {n / 1e6:6.2f}M active  MFU {mfu}")
    return row


def overrides_key(overrides: list[str]) -> str:
    """Assignments as a suffix of a row's or entry's name: `` [a, b]``, empty for none."""
    return f" [{', '.join(overrides)}]" if overrides else ""


def row_key(row: dict[str, Any]) -> str:
    """A throughput row's identity: its objective and the assignments it ran with, so rows of other settings stay."""
    return row["objective"] + overrides_key(list(row.get("overrides", [])))


def _tokens_per_step(logs: list[dict[str, Any]], every: int) -> float:
    """Mean input tokens per optimizer step, from the logged token counts."""
    counts = [r["tokens"] for r in logs if "tokens" in r]
    return statistics.mean(counts) / every if counts else 1.0


def pretrain_final(final: dict[str, Any]) -> dict[str, Any]:
    """The pretraining run's final scores; for ELECTRA also ``disc_over_constant``, the discriminator's accuracy less
    that of always answering 'original' (``1 - replaced_fraction``): near zero, the discriminator has learned nothing
    a fine-tuned classifier could use; and ``disc_loss_constant``, the binary cross-entropy (nats) of always giving
    the replaced fraction as the probability, its binary entropy, which ``disc_loss`` must get below to beat the constant."""
    out = {k: v for k, v in final.items() if isinstance(v, (int, float))}
    if "disc_accuracy" in out and "replaced_fraction" in out:
        out["disc_over_constant"] = out["disc_accuracy"] - (1.0 - out["replaced_fraction"])
        q = out["replaced_fraction"]
        out["disc_loss_constant"] = -sum(x * math.log(x) for x in (q, 1.0 - q) if x > 0)
    return out


def corpus_key(corpus: str) -> str:
    """The corpus as part of an entry's name: `` (mixed)``, empty for the recipes' own tiny Shakespeare."""
    return "" if corpus == RECIPE_CORPUS else f" ({corpus})"


def corpus_assignment(corpus: str, root: Path) -> str:
    """``data.text=[...]``: the corpus's files under the data root, for both objectives alike."""
    return f"data.text={json.dumps([str(Path(root) / f) for f in CORPORA[corpus]])}"


def electra_vs_mlm(rows: dict[str, dict[str, Any]], tmp: Path, args: argparse.Namespace, device: torch.device,
                   save: Callable[[dict[str, Any]], None] = lambda r: None) -> dict[str, Any]:
    """Pretrain masked LM and ELECTRA for the same wall time on ``args.corpus``, then fine-tune each on SST-2 for every seed.

    ``save`` gets the result so far after each pretraining and each fine-tuned seed.
    """
    from attnkit import recipes, runs

    result: dict[str, Any] = {"minutes": args.minutes, "seeds": args.seeds, "finetune_epochs": args.finetune_epochs or "recipe",
                              "objectives": {}}
    for name in args.compare:
        steps = 6 if args.quick else max(int(args.minutes * 60 * rows[name]["steps_per_s"]), 1)
        out = tmp / f"pretrain-{name}"
        t0 = time.perf_counter()
        report = run_recipe(name, out, quick=args.quick, root=args.data_root, device=device,
                            assignments=[f"train.steps={steps}", f"train.schedule.warmup={max(steps // 20, 1)}",
                                         f"train.eval.every={steps}", corpus_assignment(args.corpus, args.data_root),
                                         *args.set, *args.pretrain_set])  # one evaluation, after the last step
        accs: list[float] = []
        entry: dict[str, Any] = {"corpus": args.corpus, "corpus_files": list(CORPORA[args.corpus]),
                                 "pretrain_steps": steps, "pretrain_wall_s": round(time.perf_counter() - t0, 2),
                                 "pretrain_overrides": list(args.pretrain_set), "execution_overrides": list(args.set),
                                 "finetune_overrides": list(args.finetune_set),
                                 "pretrain_final": pretrain_final(report.final),
                                 "sst2_dev_accuracy": accs, "mean": None, "finetune_wall_s": []}
        key = name + corpus_key(args.corpus) + overrides_key(  # "electra (mixed) [train.optim.lr=2e-4]"
            [*args.set, *args.pretrain_set, *(f"finetune {a}" for a in args.finetune_set)])
        result["objectives"][key] = entry
        save(result)
        for seed in args.seeds:
            job = runs.job("classify")
            cfgs = runs.resolve_configs(job, recipe=recipes.get("sst2-minilm"), quick=args.quick, root=args.data_root,
                                        assignments=[f"data.model={out / 'model'}", f"train.seed={seed}", f"train.device={device}",
                                                     *([f"data.epochs={args.finetune_epochs}"] if args.finetune_epochs else []),
                                                     *args.finetune_set])
            t0 = time.perf_counter()
            report = runs.run(job, cfgs, tmp / f"sst2-{name}-{seed}", progress=False, log=lambda s: None)
            entry["finetune_wall_s"].append(round(time.perf_counter() - t0, 2))
            accs.append(float(report.final.get("accuracy", report.final.get("test_accuracy", float("nan")))))
            entry["mean"] = statistics.mean(accs)
            save(result)
        print(f"{key:8s} {steps:6d} pretraining steps; SST-2 dev accuracy {', '.join(f'{a:.4f}' for a in accs)} (mean {statistics.mean(accs):.4f})")
    return result


def translation(tmp: Path, args: argparse.Namespace, device: torch.device,
                save: Callable[[dict[str, Any]], None] = lambda r: None) -> dict[str, Any]:
    """Multi30k de-en from random initialisation and after BART / MASS denoising: test BLEU of each (``save`` gets them after each run)."""
    from attnkit import recipes, runs
    from attnkit.runs.path import run_stages

    out: dict[str, Any] = {}
    for name in args.translations:
        recipe = recipes.get(name)
        job = runs.job("translate")
        where = tmp / name
        assignments = [f"train.device={device}"]
        t0 = time.perf_counter()
        fed = run_stages(recipe, where, quick=args.quick, root=args.data_root, progress=False, log=lambda s: None, assignments=assignments)
        cfgs = runs.resolve_configs(job, recipe=recipe, quick=args.quick, root=args.data_root, cuda=device.type == "cuda",
                                    assignments=[*fed, *assignments])
        report = runs.run(job, cfgs, where, progress=False, recipe=name, log=lambda s: None)
        out[name] = {**{k: report.final.get(k) for k in ("test_bleu", "test_bleu_lc", "valid_loss")},
                     "wall_s": round(time.perf_counter() - t0, 2)}  # denoising stage (if any), training, averaging, test BLEU
        save(out)
        print(f"{name:22s} test BLEU {report.final.get('test_bleu')} (lowercased {report.final.get('test_bleu_lc')})")
    return out


PARTS = ("throughput", "electra-vs-mlm", "translation")
TRANSLATIONS = ("multi30k-de-en", "multi30k-de-en-bart", "multi30k-de-en-mass")


def parse_parts(text: str) -> list[str]:
    """``--parts``: a comma-separated subset of :data:`PARTS` (``all``: every part), in the order given."""
    return common.parse_parts(text, PARTS)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=Path("data"), help="holds tinyshakespeare/, sst2/ and multi30k/")
    p.add_argument("--device", default=None, help="cuda, cpu, ... (default: CUDA when present)")
    p.add_argument("--parts", "--part", type=parse_parts, default=list(PARTS),
                   help="comma-separated parts: throughput, electra-vs-mlm, translation; default all. What they finish is "
                        "merged into the JSON of this device and date if there is one")
    p.add_argument("--objectives", nargs="+", choices=list(OBJECTIVES), default=list(OBJECTIVES))
    p.add_argument("--steps", type=int, default=200, help="training steps per objective for the throughput (default 200)")
    p.add_argument("--minutes", type=float, default=5.0, help="pretraining wall time of masked LM and of ELECTRA (default 5)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="SST-2 fine-tuning seeds (default 0 1 2)")
    p.add_argument("--corpus", choices=list(CORPORA), default="mixed",
                   help="electra-vs-mlm's pretraining text under --data-root, the same for both objectives: mixed (default; "
                        f"{', '.join(CORPORA['mixed'])}) or shakespeare (the recipes' own tinyshakespeare/input.txt)")
    p.add_argument("--compare", nargs="+", choices=["mlm", "electra"], default=["mlm", "electra"],
                   help="the objectives electra-vs-mlm pretrains and fine-tunes (default both; one each in concurrent calls)")
    p.add_argument("--translations", nargs="+", choices=list(TRANSLATIONS), default=list(TRANSLATIONS),
                   help="the translation part's runs (default all three; a few each in concurrent calls)")
    p.add_argument("--finetune-epochs", type=float, default=None,
                   help="SST-2 fine-tuning epochs of each pretrained encoder (default: the sst2-minilm recipe's 3)")
    p.add_argument("--quick", action="store_true", help="the recipes' quick variants, a few steps: checks the script, not speed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an assignment added to every recipe of the throughput part and to electra-vs-mlm's pretraining, "
                        "recorded in the rows and entries (repeatable; e.g. --set train.execution.cuda_graphs=true to time "
                        "and pretrain with steps replayed as CUDA graphs)")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an assignment added to electra-vs-mlm's pretraining of the compared objectives (repeatable); their entries "
                        "are named with it, e.g. 'electra [train.optim.lr=2e-4]', beside the recipe's own")
    p.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                   help="an assignment added to electra-vs-mlm's SST-2 fine-tuning of both objectives (repeatable); their entries "
                        "are named with it, e.g. 'electra [finetune train.optim.lr=3e-4]'")
    p.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default benchmarks/results)")
    args = p.parse_args(argv)
    bad = next((a for a in [*args.set, *args.pretrain_set, *args.finetune_set] if "=" not in a), None)
    if bad is not None:
        p.error(f"{bad!r}: write KEY=VALUE, e.g. train.optim.lr=3e-4")
    if any(a.split("=", 1)[0].strip() == "data.text" for a in args.pretrain_set):
        p.error("--pretrain-set data.text=... would replace the corpus the entry records; choose it with --corpus")
    device = common.pick_device(args.device)
    env = common.environment(device)
    suffix = "-quick" if args.quick else ""
    payload = common.read_day_json("pretraining", env, args.out_dir, suffix=suffix)
    # this date's rows with this call's --set assignments (often none): their steps/s set electra-vs-mlm's pretraining steps
    done: dict[str, dict[str, Any]] = {r["objective"]: r for r in payload.get("throughput", [])
                                       if isinstance(r, dict) and "objective" in r and list(r.get("overrides", [])) == list(args.set)}

    def save(part: str, key: str, merge: Callable[[Any], Any]) -> Path:
        """Write the JSON with ``key`` set to ``merge(what the file holds there)``, re-read under the lock, so what other
        calls that day wrote, also concurrently, is kept."""
        def update(disk: dict[str, Any]) -> None:
            disk["quick"] = args.quick
            disk.setdefault("commands", {})[part] = env["command"]
            disk[key] = merge(disk.get(key))

        return common.update_day_json("pretraining", env, update, args.out_dir, suffix=suffix)

    def save_row(row: dict[str, Any]) -> None:
        """One objective's throughput row, replacing the row of an earlier call with the same objective and assignments."""
        if list(row["overrides"]) == list(args.set):
            done[row["objective"]] = row

        def merge(old: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
            rows = {row_key(r): r for r in old or [] if isinstance(r, dict) and "objective" in r}
            rows[row_key(row)] = row
            order = {n: i for i, n in enumerate(OBJECTIVES)}
            return sorted(rows.values(), key=lambda r: (order.get(r["objective"], len(order)), row_key(r)))

        save("throughput", "throughput", merge)

    def merge_comparison(new: dict[str, Any]) -> Callable[[dict[str, Any] | None], dict[str, Any]]:
        """electra-vs-mlm per objective: other calls' objectives are kept while the settings agree."""
        def merge(old: dict[str, Any] | None) -> dict[str, Any]:
            old = old or {}
            same = all(old.get(k) == new[k] for k in ("minutes", "seeds", "finetune_epochs"))
            return {**new, "objectives": {**(old.get("objectives", {}) if same else {}), **new["objectives"]}}
        return merge

    with tempfile.TemporaryDirectory() as tmp:
        if "throughput" in args.parts:
            for name in args.objectives:
                save_row(throughput(name, Path(tmp), args, device))
        if "electra-vs-mlm" in args.parts:
            for name in args.compare:
                if name in done and "steps_per_s" in done[name]:
                    print(f"{name}: {done[name]['steps_per_s']:.2f} steps/s from the throughput rows of this date")
                else:
                    save_row(throughput(name, Path(tmp), args, device))
            electra_vs_mlm(done, Path(tmp), args, device, lambda r: save("electra-vs-mlm", "electra_vs_mlm", merge_comparison(r)))
        if "translation" in args.parts:  # per recipe: other calls' recipes are kept
            translation(Path(tmp), args, device, lambda r: save("translation", "translation", lambda old: {**(old or {}), **r}))
    path = common.results_path("pretraining", env, args.out_dir, suffix=suffix)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main()
