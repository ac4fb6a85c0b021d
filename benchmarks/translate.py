"""Multi30k German -> English: train the ``multi30k-de-en`` recipe, score it, and time it.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed), with the
corpus copied inside the tree (``.data/`` is git-ignored):

    mkdir -p .data && cp -r ../shared/data/multi30k .data/
    python benchmarks/translate.py --data .data/multi30k --minutes 7     # one GPU; training capped at 7 min
    python benchmarks/translate.py --data .data/multi30k --quick         # tiny CPU smoke run, < 60 s
    python benchmarks/translate.py --data .data/multi30k --set model.norm_position=pre --tag prenorm   # a variant
    python benchmarks/translate.py --data .data/multi30k --ablations     # 4 runs of 1,500 steps, tabulated

In one process:

1. **Training speed, side by side.** The recipe's architecture built twice, as
   ``attnkit.Transformer`` and from ``torch.nn.Transformer`` (shared scaled embeddings,
   sinusoids, tied output layer, post-norm without the final LayerNorms), both with dropout
   p on embeddings, residuals, attention weights and FFN activations (torch's placement),
   trained by the same step function on the same Multi30k token batches: bf16 autocast,
   label-smoothed loss summed over tokens, fused Adam(0.9, 0.98, 1e-9). Steps are timed in
   interleaved rounds (``benchmarks.common.time_interleaved``); tokens/s counts non-pad
   target tokens. The measured attnkit step time also sizes the real run to ``--minutes``.
2. **The training run** (timed as a whole: tokenizer, data, training, validation,
   checkpoint averaging, the final test translation): the ``multi30k-de-en`` recipe through
   :func:`attnkit.runs.run`, as ``attnkit train translate --recipe multi30k-de-en`` runs it
   (``--quick``: the recipe's quick variant; on a GPU its CUDA settings apply).
3. **Quality**: test_2016_flickr translated with beam 4 / length penalty 0.6, sacreBLEU
   13a cased and lowercased (with signatures), for the averaged model and for the last
   checkpoint alone (the "no averaging" ablation), validation BLEU of both too.
4. **Decoding speed** on the test set, 128 sentences per batch, bf16 autocast: beam search
   with the KV cache, greedy with the cache, and beam search recomputing every prefix
   (no cache); sentences/s of each.

``--set KEY=VALUE`` overrides the recipe. ``--ablations`` instead trains the recipe and three variants of it (no label smoothing,
learned positions, pre-norm) for ``--ablation-steps`` steps each and tabulates their test
BLEU, with the recipe's last checkpoint alone as the "no checkpoint averaging" row.

The recipe (``attnkit recipes`` lists it), and why (Multi30k: 29k short sentence pairs, ~14 tokens each):

* Model: d_model 512, 8 heads, d_ff 2048 (the paper's base widths) but 3 + 3 layers, and
  dropout 0.3 on embeddings and residuals (the P_drop of the paper's big model, table 3).
  29k pairs are ~1/150 of WMT En-De: on so little data regularisation matters more than
  depth. Post-norm, sinusoidal positions, shared embeddings, tied output, as the paper.
* Vocabulary: joint BPE with 8,000 pieces (with ~800k words of text, larger vocabularies
  leave most pieces rare).
* Batches of about 8,192 tokens per side (~490 sentence pairs, 59 steps per epoch; the
  paper's 25k would be about 20). Adam(0.9, 0.98, 1e-9), Noam schedule with 600
  warm-up steps and factor 0.5: peak lr 9.0e-4 at step 600, 3.7e-4 at step 3,500.
* 3,500 steps (~60 epochs) at most, fewer if ``--minutes`` would be exceeded; label
  smoothing 0.1; validation loss every 200 steps; the last 5 checkpoints (200 steps apart,
  the last ~14 epochs) averaged. bf16 autocast, fp32 weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import attnkit  # noqa: E402
from attnkit import recipes, runs  # noqa: E402
from attnkit.config import apply_overrides  # noqa: E402
from attnkit.data.parallel import TokenBatches, read_parallel  # noqa: E402
from attnkit.data.seq2seq import Seq2SeqBatch  # noqa: E402
from attnkit.data.subword import train_subword_tokenizer  # noqa: E402
from attnkit.layers.positional import sinusoid_table  # noqa: E402
from attnkit.metrics import bleu_scores  # noqa: E402
from attnkit.models.transformer import TransformerConfig  # noqa: E402
from attnkit.objectives import seq2seq_loss  # noqa: E402
from attnkit.training import build_optimizer, list_checkpoints  # noqa: E402
from attnkit.training.graphs import GraphedSteps  # noqa: E402
from attnkit.training.loop import autocast_for  # noqa: E402
from attnkit.training.optim import device_lrs  # noqa: E402
from attnkit.training.translation import TranslationConfig, encode_pairs, translate_lines  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

warnings.filterwarnings("ignore", message=r".*enable_nested_tensor.*")
warnings.filterwarnings("ignore", message=r".*nested tensors is in prototype.*")

PAD = 0
BLEU_TARGET = 38.0  # lowercased sacreBLEU, test_2016_flickr
MINUTES_TARGET = 15.0
RATIO_TARGET = 1.2

RECIPE = "multi30k-de-en"  # attnkit recipes: the run behind the published Multi30k figure

COMPILED_BATCHES = 6  # batches (so shapes) of the compiled speed comparison; see training_speed

# -- the torch.nn.Transformer twin --------------------------------------------------------
class TorchTranslator(nn.Module):
    """The recipe's architecture from ``torch.nn.Transformer``: shared scaled embeddings,
    sinusoidal positions, tied output layer; post-norm without the final stack LayerNorms
    (the paper's, and attnkit's, post-norm stacks have none)."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        d = c.d_model
        self.embed = nn.Embedding(c.src_vocab_size, d, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=d**-0.5)
        self.register_buffer("pe", sinusoid_table(c.max_len, d), persistent=False)
        self.scale, self.drop = math.sqrt(d), nn.Dropout(c.dropout)
        self.core = nn.Transformer(
            d, c.n_heads, c.n_encoder_layers, c.n_decoder_layers, c.d_ff, c.dropout, batch_first=True,
            norm_first=c.norm_position == "pre",
        )
        if c.norm_position == "post":
            self.core.encoder.norm = None
            self.core.decoder.norm = None
        self.out = nn.Linear(d, c.tgt_vocab_size, bias=False)
        self.out.weight = self.embed.weight
        self._causal: dict[tuple[int, torch.device], Tensor] = {}
        self.cache_causal = True  # False under torch.compile: a dict keyed by length would recompile per length

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        ts, tt = src.shape[1], tgt_in.shape[1]
        key = (tt, src.device)
        if not self.cache_causal:
            self._causal = {key: nn.Transformer.generate_square_subsequent_mask(tt, device=src.device)}
        elif key not in self._causal:
            self._causal[key] = nn.Transformer.generate_square_subsequent_mask(tt, device=src.device)
        pad = src == PAD  # (B, Ts) True = padding
        s = self.drop(self.embed(src) * self.scale + self.pe[:ts])  # (B, Ts, d)
        t = self.drop(self.embed(tgt_in) * self.scale + self.pe[:tt])  # (B, Tt, d)
        h = self.core(s, t, tgt_mask=self._causal[key], tgt_is_causal=True, src_key_padding_mask=pad, memory_key_padding_mask=pad)
        return self.out(h)  # (B, Tt, V)


LOGITS: dict[str, Callable[[nn.Module, Seq2SeqBatch], Tensor]] = {  # how each model gives next-token logits
    "attnkit": lambda m, b: m(b.src, b.tgt_in).logits,
    "torch.nn.Transformer": lambda m, b: m(b.src, b.tgt_in),
}


def train_step_fn(model: nn.Module, logits_of: Callable[[nn.Module, Seq2SeqBatch], Tensor], batches: list[Seq2SeqBatch],
                  label_smoothing: float, device: torch.device, graphed: bool = False) -> common.Step:
    """One optimizer step as :class:`attnkit.training.Trainer` takes it (grad_accum 1, no clipping);
    ``graphed``: as the Trainer takes it with ``train.execution.cuda_graphs`` (the step recorded per batch
    shape and replayed, :class:`attnkit.training.graphs.GraphedSteps`)."""
    opt = build_optimizer(model, "adam", 1e-4, (0.9, 0.98), 1e-9, capturable=graphed)
    if graphed:
        device_lrs(opt)
    model.train()

    def body(b: Seq2SeqBatch) -> tuple[Tensor, Tensor]:
        opt.zero_grad(set_to_none=not graphed)  # recorded steps keep their gradients at one address
        with autocast_for(device, "auto", cache=not graphed):
            loss, n = seq2seq_loss(logits_of(model, b), b.tgt_out, epsilon=label_smoothing, pad_id=PAD)
        (loss * n).backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        torch._foreach_div_(grads, n.clamp(min=1))  # as the Trainer divides
        opt.step()
        return loss.detach(), n

    run = GraphedSteps(body) if graphed else body

    def step(i: int) -> None:
        run(batches[i % len(batches)])

    return step


def compile_layers(model: nn.Module) -> nn.Module:
    """Each encoder and decoder layer of ``model`` (attnkit's or the twin's) under
    ``torch.compile(dynamic=True)``, the rest eager. Layer by layer, neither model recompiles
    per target length (checked on the CPU with ``TORCH_LOGS=recompiles``), where
    the whole twin does (``torch.nn.Transformer`` specialises on it)."""
    stacks = [model.encoder, model.decoder] if isinstance(model, attnkit.Transformer) else [model.core.encoder, model.core.decoder]
    for stack in stacks:
        stack.layers = nn.ModuleList(torch.compile(layer, dynamic=True) for layer in stack.layers)
    return model


def training_speed(model_cfg: TransformerConfig, data_cfg: TranslationConfig, device: torch.device, quick: bool,
                   compile: bool = False, layers: bool = False, graphed: bool = False) -> dict[str, Any]:
    """Tokens/s of attnkit and torch.nn.Transformer twins, trained by one step function on the same batches.

    ``graphed``: both models' steps recorded as CUDA graphs, one per batch shape, and replayed
    (``train.execution.cuda_graphs``); two untimed passes over the batches first run each shape eagerly
    once and record it.

    ``layers``: both models with every layer compiled (:func:`compile_layers`), on all the
    batches; the warm-up steps compile and are not timed.

    ``compile``: both models under ``torch.compile(dynamic=True)``, the step function unchanged;
    the first steps, which compile, are not timed. attnkit's model compiles twice (one
    recompile when dynamo learns that source and target lengths differ) and then serves every
    shape; the twin recompiles for every new target length (``torch.nn.Transformer`` specialises
    on it: ``TORCH_LOGS=recompiles`` on the CPU), which made the 24-batch compiled
    comparison outrun four device calls. Compiled, the comparison therefore uses the first
    ``COMPILED_BATCHES`` batches, each shape compiled during the warm-up."""
    train = data_cfg.read(data_cfg.train_split, limit=data_cfg.max_pairs)
    tok = train_subword_tokenizer(train.src + train.tgt, data_cfg.vocab_size, data_cfg.tokenizer)
    vocab = tok.get_vocab_size()
    p = model_cfg.dropout
    cfg = dataclasses.replace(
        model_cfg, src_vocab_size=vocab, tgt_vocab_size=vocab, attention=dataclasses.replace(model_cfg.attention, dropout=p),
        activation_dropout=p
    )
    plan_data = TokenBatches(encode_pairs(tok, train, cfg.max_len), data_cfg.max_tokens)
    n_batches = 4 if quick else COMPILED_BATCHES if compile else 24
    if compile:  # one graph per target length for the twin: allow them all
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 2 * n_batches))
    batches = [b.to(device) for _, b in zip(range(n_batches), plan_data.batches(epoch=0, seed=0))]
    torch.manual_seed(0)
    models = {"attnkit": attnkit.Transformer(cfg).to(device), "torch.nn.Transformer": TorchTranslator(cfg).to(device)}
    run: dict[str, nn.Module] = dict(models)
    compile_s: dict[str, float] = {}
    if layers:
        for name, m in models.items():
            compile_layers(m)
            t0 = time.perf_counter()
            LOGITS[name](m, batches[0]).float().sum().backward()
            m.zero_grad(set_to_none=True)
            common.synchronize(device)
            compile_s[name] = time.perf_counter() - t0  # the first graphs; later shapes compile in the warm-up
    if compile:
        models["torch.nn.Transformer"].cache_causal = False
        run = {n: torch.compile(m, dynamic=True) for n, m in models.items()}
    steps = {
        name: train_step_fn(m, LOGITS[name], batches, 0.1, device, graphed=graphed) for name, m in run.items()
    }
    if compile:  # compile outside the timing (first call, then the rest of the shapes)
        for name, step in steps.items():
            t0 = time.perf_counter()
            step(0)
            common.synchronize(device)
            compile_s[name] = time.perf_counter() - t0
    # Every batch has its own shape, and cuDNN builds an attention plan per new shape, shared by
    # both models: warm up on all batches first so neither pays the other's plan building.
    warmup, iters, rounds = (4, 4, 2) if quick else (n_batches, n_batches, 3)
    if graphed:  # each shape: once eagerly, once recorded (GraphedSteps), after its eager warm-up steps
        warmup = 2 * n_batches + GraphedSteps.WARMUP
    timings = common.time_interleaved(steps, device, warmup=warmup, iters=iters, rounds=rounds)
    tokens = sum(int(batches[i % n_batches].n_tokens) for i in range(iters))  # target tokens of one round
    rows = {}
    for name, t in timings.items():
        rows[name] = {**t.to_dict(), "tokens_per_s": tokens / (t.mean_ms * iters / 1e3),
                      "parameters": sum(q.numel() for q in models[name].parameters())}
    if device.type == "cuda" and not compile:  # where a step's time goes: GPU kernels, host dispatch
        for name, step in steps.items():
            rows[name]["host_ms"] = host_dispatch_ms(step, device, n_batches)
            if not graphed:  # (the profiler's view of replayed graphs was not checked)
                rows[name]["profile"] = common.profile_top(step, device, steps=n_batches, top=14)
    ratio = rows["attnkit"]["tokens_per_s"] / rows["torch.nn.Transformer"]["tokens_per_s"]
    del models, steps
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "compiled": "layers" if layers else compile, "cuda_graphs": graphed, "compile_s": compile_s, "model": cfg.to_dict(), "batches": n_batches, "target_tokens_per_batch": tokens / iters,
        "padded_tokens_per_batch": sum(b.tgt_in.numel() for b in batches) / n_batches, "results": rows,
        "ratio_attnkit_over_torch": ratio,
        "method": "same step function (bf16 autocast, label-smoothed loss x tokens, grads / tokens, fused Adam); "
                  "dropout p on embeddings, residuals, attention weights and FFN activations in both; "
                  "time_interleaved rounds, tokens/s = non-pad target tokens / mean step time",
    }


def host_dispatch_ms(step: common.Step, device: torch.device, n: int) -> float:
    """Mean host time to issue one step, the GPU idle when it starts: the step returns once
    every kernel is queued, so this is the host's share (it includes any wait on a host read)."""
    total = 0.0
    for i in range(n):
        common.synchronize(device)
        t0 = time.perf_counter()
        step(i)
        total += time.perf_counter() - t0
    common.synchronize(device)
    return total / n * 1e3


# -- decoding speed ---------------------------------------------------------------------------
def decoding_speed(model: nn.Module, tok: Any, sources: list[str], device: torch.device, precision: str) -> dict[str, Any]:
    variants = {
        "beam4 kv-cache": dict(beam_size=4, use_cache=True),
        "greedy kv-cache": dict(beam_size=1, use_cache=True),
        "beam4 no-cache": dict(beam_size=4, use_cache=False),
    }
    out: dict[str, Any] = {}
    for name, kw in variants.items():
        with autocast_for(device, precision):
            # Warm-up on the whole set: every batch shape the timed pass meets has had its kernels
            # chosen (cuDNN builds an attention plan per new shape), so each variant runs steady-state.
            translate_lines(model, tok, sources, batch_size=128, device=device, **kw)
            common.synchronize(device)
            start = time.perf_counter()
            hyps, _ = translate_lines(model, tok, sources, batch_size=128, device=device, **kw)
            common.synchronize(device)
        seconds = time.perf_counter() - start
        out[name] = {"sentences": len(sources), "seconds": seconds, "sentences_per_s": len(sources) / seconds}
        out[name]["hypotheses_sample"] = hyps[:3]
    out["beam_cache_over_greedy"] = out["beam4 kv-cache"]["sentences_per_s"] / out["greedy kv-cache"]["sentences_per_s"]
    out["beam_cache_over_no_cache"] = out["beam4 kv-cache"]["sentences_per_s"] / out["beam4 no-cache"]["sentences_per_s"]
    return out


def score(model: nn.Module, tok: Any, corpus: Any, cfg: TranslationConfig, device: torch.device, precision: str) -> dict[str, Any]:
    start = time.perf_counter()
    with autocast_for(device, precision):
        hyps, truncated = translate_lines(model, tok, corpus.src, beam_size=cfg.beam_size, length_penalty=cfg.length_penalty,
                                          batch_size=128, device=device)
    return {**bleu_scores(hyps, corpus.tgt), "sentences": len(hyps), "truncated": truncated,
            "seconds": time.perf_counter() - start, "sample": [
                {"source": s, "reference": r, "hypothesis": h} for s, r, h in list(zip(corpus.src, corpus.tgt, hyps))[:5]]}


# -- ablations -----------------------------------------------------------------------------------
ABLATIONS = {  # name -> --set overrides of the recipe (the paper's table 3 rows, at small scale)
    "recipe": [],
    "no label smoothing": ["train.reg.label_smoothing=0"],
    "learned positions": ["model.positional=learned"],
    "pre-norm": ["model.norm_position=pre"],
}


def recipe_configs(args: argparse.Namespace, device: torch.device, extra: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The configs of the ``multi30k-de-en`` recipe (its quick variant with ``--quick``, its CUDA settings on a
    GPU) with the corpus at ``--data``, the device, ``--set`` and ``extra`` applied together."""
    return runs.resolve_configs(
        runs.job("translate"), recipe=recipes.get(RECIPE, "translate"), quick=args.quick, cuda=device.type == "cuda",
        assignments=[f"data.data={json.dumps(str(args.data))}", f"train.device={device}", *args.set, *extra],
    )


def train(cfgs: dict[str, Any], work: Path) -> tuple[runs.RunReport, float]:
    """One run of the recipe through :func:`attnkit.runs.run` into ``work``, and its wall time in seconds."""
    t0 = time.perf_counter()
    report = runs.run(runs.job("translate"), cfgs, work, progress=False, recipe=RECIPE)
    return report, time.perf_counter() - t0


def ablations(args: argparse.Namespace, device: torch.device, env: dict[str, Any]) -> int:
    """Each variant trained for ``--ablation-steps`` steps; test BLEU of the averaged model and of
    the last checkpoint alone (the "no checkpoint averaging" row comes from the recipe's run)."""
    from attnkit.data.tokenizer import load_tokenizer

    steps = args.ablation_steps
    limit = 64 if args.quick else None
    rows = []
    for name, overrides in ABLATIONS.items():
        c = recipe_configs(args, device, [*overrides, f"train.steps={steps}"])
        data_cfg, precision = c["data"], c["train"].execution.precision
        work = Path(tempfile.mkdtemp(prefix="attnkit-ablation-"))
        run, wall = train(c, work)
        tok = load_tokenizer(run.model_dir)
        test = read_parallel(args.data, "test_2016_flickr", data_cfg.src, data_cfg.tgt, limit=limit)
        row: dict[str, Any] = {"variant": name, "overrides": overrides, "steps": run.result.step, "train_wall_s": wall,
                               "val_loss_averaged": run.final.get("valid_loss")}
        for which, path in (("averaged", run.model_dir), ("last_checkpoint", list_checkpoints(work)[-1])):
            model = attnkit.load(path, map_location=device).eval()
            q = score(model, tok, test, data_cfg, device, precision)
            row[which] = {k: q[k] for k in ("bleu", "bleu_lc", "bleu_signature", "bleu_lc_signature")}
        print(f"{name:20s} test BLEU averaged {row['averaged']['bleu']:.2f} / lc {row['averaged']['bleu_lc']:.2f}, "
              f"last checkpoint {row['last_checkpoint']['bleu']:.2f} / lc {row['last_checkpoint']['bleu_lc']:.2f} ({wall:.0f}s)")
        rows.append(row)
        shutil.rmtree(work, ignore_errors=True)
    recipe = rows[0]
    rows.insert(1, {"variant": "no checkpoint averaging", "overrides": ["data.average_last=1"], "steps": recipe["steps"],
                    "averaged": recipe["last_checkpoint"], "note": "the recipe run's last checkpoint"})
    table = common.markdown_table(
        ["variant", "test BLEU (cased)", "test BLEU (lowercased)"],
        [[r["variant"], f"{r['averaged']['bleu']:.2f}", f"{r['averaged']['bleu_lc']:.2f}"] for r in rows],
    )
    payload = {"benchmark": "translate-ablations", "quick": args.quick, "environment": env, "steps": steps, "recipe": RECIPE,
               "configs": {k: v.to_dict() for k, v in recipe_configs(args, device).items()}, "rows": rows, "table": table}
    suffix = "-ablations" + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    path = common.write_json("translate", payload, args.out_dir, suffix=suffix)
    print(f"wrote {path}\n\n{table}")
    return 0


def speed_only(model_cfg: TransformerConfig, data_cfg: TranslationConfig, device: torch.device, args: argparse.Namespace,
               env: dict[str, Any]) -> int:
    """The training-speed comparison alone: eager, then both models compiled, in one process."""
    runs = {}
    for mode in args.speed_modes:
        t0 = time.perf_counter()
        runs[mode] = training_speed(model_cfg, data_cfg, device, args.quick, compile=mode == "compiled", layers=mode == "layers",
                                    graphed=mode == "graphed")
        runs[mode]["wall_s"] = time.perf_counter() - t0
        r = runs[mode]["results"]
        # tokens/s come from the mean step time over the batches (shapes differ); print that mean
        print(f"{mode}: attnkit {r['attnkit']['tokens_per_s']:,.0f} tokens/s (mean {r['attnkit']['mean_ms']:.2f} ms), "
              f"torch.nn.Transformer {r['torch.nn.Transformer']['tokens_per_s']:,.0f} (mean {r['torch.nn.Transformer']['mean_ms']:.2f} ms), "
              f"ratio {runs[mode]['ratio_attnkit_over_torch']:.3f}", flush=True)
        for name, row in r.items():
            if "profile" in row:
                prof = row["profile"]
                print(f"  {name}: step {row['mean_ms']:.2f} ms, host dispatch {row['host_ms']:.2f} ms, GPU kernels "
                      f"{prof['busy_ms_per_step']:.2f} ms, host reads {prof['host_reads_per_step']:.1f} per step")
                for k in prof["top"]:
                    print(f"    {k['ms_per_step']:7.3f} ms {k['calls_per_step']:6.1f}x  {k['name'][:90]}")
    payload = {"benchmark": "translate-speed", "quick": args.quick, "environment": env, "runs": runs}
    suffix = "-speed" + ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    print(f"wrote {common.write_json('translate', payload, args.out_dir, suffix=suffix)}")
    return 0


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".data/multi30k"), help="Multi30k directory (default .data/multi30k)")
    ap.add_argument("--minutes", type=float, default=MINUTES_TARGET, help="budget of the training run in minutes (default 15)")
    ap.add_argument("--quick", action="store_true", help="the recipe's quick variant (tiny model, 1,500 pairs, 40 steps): a smoke test on a CPU")
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when present)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the multi30k-de-en recipe, e.g. model.norm_position=pre (repeatable)")
    ap.add_argument("--tag", default="", help="suffix of the result file name, for variants")
    ap.add_argument("--work", type=Path, default=None, help="where checkpoints go (default: a temporary directory, removed)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default benchmarks/results)")
    ap.add_argument("--ablations", action="store_true",
                    help="instead of the full run: the recipe, no label smoothing, learned positions and pre-norm, "
                         "each trained --ablation-steps steps, test BLEU tabulated")
    ap.add_argument("--ablation-steps", type=int, default=1500, help="steps of each ablation run (default 1500)")
    ap.add_argument("--skip-speed", action="store_true",
                    help="skip the attnkit/torch training-speed comparison (which also sizes the run to --minutes: "
                         "without it the recipe's steps run, whatever --minutes says)")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the training-speed comparison, eager and under torch.compile(dynamic=True) for both models")
    ap.add_argument("--speed-modes", default="eager,compiled", type=lambda x: [m.strip() for m in x.split(",")],
                    help="with --speed-only: which comparisons, in order (default eager,compiled; also layers: every "
                         "layer of both models compiled; graphed: both models' steps replayed as CUDA graphs)")
    ap.add_argument("--no-cudnn-attention", action="store_true",
                    help="turn SDPA's cuDNN backend off for the whole process, as the Trainer does for varying-length "
                         "tasks (torch.backends.cuda.enable_cudnn_sdp(False))")
    args = ap.parse_args(argv)
    if args.no_cudnn_attention and torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)
    if set(args.speed_modes) - {"eager", "compiled", "layers", "graphed"} or not args.speed_modes:
        raise SystemExit(f"error: --speed-modes {','.join(args.speed_modes)}: choose from eager, compiled, layers, graphed")
    if "graphed" in args.speed_modes and not torch.cuda.is_available():
        raise SystemExit("error: --speed-modes graphed needs a CUDA device")

    if not (args.data / "train.de.gz").is_file() and not (args.data / "train.de").is_file():
        raise SystemExit(f"error: no Multi30k at {args.data}; copy it there: mkdir -p .data && cp -r ../shared/data/multi30k .data/")
    device = common.pick_device(args.device)
    if args.quick and device.type == "cpu":
        torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared CPU
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfgs = recipe_configs(args, device)
    model_cfg, train_cfg, data_cfg = cfgs["model"], cfgs["train"], cfgs["data"]
    env = common.environment(device)
    env["cudnn_sdp_enabled"] = torch.backends.cuda.cudnn_sdp_enabled()
    print(f"device {env['device_name']} | torch {env['torch']} | cuda {env['cuda']} | attnkit {env['attnkit']['commit'][:12]}")
    if args.ablations:
        return ablations(args, device, env)
    if args.speed_only:
        return speed_only(model_cfg, data_cfg, device, args, env)
    t_all = time.perf_counter()

    # 1. training speed, attnkit vs torch.nn.Transformer; it also sizes the run to the budget
    speed = None
    steps_budget = train_cfg.steps
    if not args.skip_speed:
        speed = training_speed(model_cfg, data_cfg, device, args.quick, graphed=train_cfg.execution.cuda_graphs)  # the run's own loop
        r = speed["results"]
        print(f"training tokens/s: attnkit {r['attnkit']['tokens_per_s']:,.0f}, torch.nn.Transformer "
              f"{r['torch.nn.Transformer']['tokens_per_s']:,.0f}, ratio {speed['ratio_attnkit_over_torch']:.2f}")
        step_s = r["attnkit"]["mean_ms"] / 1e3
        # 85% of the budget for steps; the rest for the tokenizer, validation, saving and averaging.
        steps_budget = max(1, int(0.85 * args.minutes * 60 / step_s))
    steps = min(train_cfg.steps, steps_budget) if not args.quick else train_cfg.steps
    if steps < train_cfg.steps:
        print(f"--minutes {args.minutes:g}: {steps} steps instead of {train_cfg.steps}")
        cfgs = apply_overrides([f"train.steps={steps}"], cfgs)
        train_cfg = cfgs["train"]

    # 2. the training run, timed as a whole
    work = args.work or Path(tempfile.mkdtemp(prefix="attnkit-translate-"))
    if args.work is not None and work.exists():
        shutil.rmtree(work)
    run, train_wall = train(cfgs, work)
    checkpoints = list_checkpoints(work)
    averaged_names = run.final["averaged"]
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines() if line.strip()]
    logged = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    evals = [{k.removeprefix("eval/"): v for k, v in r.items()} for r in records if any(k.startswith("eval/") for k in r)]
    print(f"trained {run.result.step} steps in {train_wall / 60:.1f} min (loop {run.result.seconds:.0f}s, "
          f"{statistics.median(logged) if logged else float('nan'):,.0f} target tokens/s), "
          f"averaged {averaged_names}; validation loss {run.final.get('valid_loss', float('nan')):.3f}")

    # 3. quality: averaged model and last checkpoint, test and validation
    from attnkit.data.tokenizer import load_tokenizer

    tok = load_tokenizer(run.model_dir)
    limit = 64 if args.quick else None
    test = read_parallel(args.data, "test_2016_flickr", data_cfg.src, data_cfg.tgt, limit=limit)
    val = read_parallel(args.data, data_cfg.valid_split, data_cfg.src, data_cfg.tgt, limit=limit)
    averaged = attnkit.load(run.model_dir, map_location=device).eval()
    last = attnkit.load(checkpoints[-1], map_location=device).eval()
    quality = {
        "averaged": {"test": score(averaged, tok, test, data_cfg, device, train_cfg.execution.precision),
                     "val": score(averaged, tok, val, data_cfg, device, train_cfg.execution.precision)},
        "last_checkpoint": {"test": score(last, tok, test, data_cfg, device, train_cfg.execution.precision),
                            "val": score(last, tok, val, data_cfg, device, train_cfg.execution.precision)},
    }
    del last
    q = quality["averaged"]["test"]
    print(f"test_2016_flickr BLEU (averaged): cased {q['bleu']:.2f}, lowercased {q['bleu_lc']:.2f} | last checkpoint: "
          f"{quality['last_checkpoint']['test']['bleu']:.2f} / {quality['last_checkpoint']['test']['bleu_lc']:.2f}")
    print(f"  {q['bleu_signature']}\n  {q['bleu_lc_signature']}")

    # Median over the logged 50-step windows: a window that follows a validation pass or a
    # checkpoint also counts that time, and the median leaves those few out.
    train_tokens_per_s = statistics.median(logged) if logged else None
    payload = {
        "benchmark": "translate",
        "quick": args.quick,
        "environment": env,
        "recipe": RECIPE, "overrides": args.set,
        "configs": {k: v for k, v in run_config(work).items() if k in ("model", "train", "data")},
        "training": {
            "steps": run.result.step, "wall_s": train_wall, "loop_s": run.result.seconds,
            "wall_includes": "tokenizer training, reading and encoding data, training, validation every eval_every, "
                             "checkpoints, averaging, final validation",
            "tokens_per_s_median_of_logged_windows": train_tokens_per_s,
            "tokens_per_s_mean_of_logged_windows": sum(logged) / len(logged) if logged else None,
            "averaged_checkpoints": averaged_names, "final": run.final, "evals": evals,
            "budget_minutes": args.minutes,
        },
        "quality": quality,
        "training_speed": speed,
        "decoding_speed": None,
        "targets": {
            "bleu_lc_test_ge_38": q["bleu_lc"] >= BLEU_TARGET,
            "train_wall_le_15_min": train_wall <= MINUTES_TARGET * 60,
            "train_ratio_ge_1_2": None if speed is None else speed["ratio_attnkit_over_torch"] >= RATIO_TARGET,
        },
        "total_s": time.perf_counter() - t_all,
    }
    suffix = ("-quick" if args.quick else "") + (f"-{args.tag}" if args.tag else "")
    path = common.write_json("translate", payload, args.out_dir, suffix=suffix)  # in case decoding is cut short
    print(f"wrote {path} (quality; decoding speed next)")

    # 4. decoding speed
    payload["decoding_speed"] = decoding_speed(averaged, tok, test.src, device, train_cfg.execution.precision)
    print("decoding sentences/s: " + ", ".join(
        f"{k} {v['sentences_per_s']:.1f}" for k, v in payload["decoding_speed"].items() if isinstance(v, dict)))
    payload["total_s"] = time.perf_counter() - t_all
    path = common.write_json("translate", payload, args.out_dir, suffix=suffix)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {path} ({payload['total_s']:.0f}s in all)")
    print("targets: " + ", ".join(f"{k}={v}" for k, v in payload["targets"].items()))
    return 0


def run_config(work: Path) -> dict[str, Any]:
    return json.loads((work / "run_config.json").read_text())


if __name__ == "__main__":
    raise SystemExit(main())
