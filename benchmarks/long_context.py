"""Long texts beyond one window: Transformer-XL memory and adaptive attention span on tiny Shakespeare.

    python benchmarks/long_context.py --data-root ../shared/data             # GPU: segments of 128, memory 128
    python benchmarks/long_context.py --data-root ../shared/data --quick     # CPU smoke: the recipes' quick variants

1. ``shakespeare-xl`` (Dai et al. 2019) is trained through the one run path twice on the same consecutive
   segments: with its memory (``data.mem_len``) and without (``data.mem_len=0``). Each saved model is scored on
   the validation stream cut into ``--rows`` long rows at the same segment length, with memories of 0, 1x and 2x
   the training memory (the model rebuilt with a longer context, same weights): validation loss and bits per
   character (loss / ln 2). The first segment of each row has no memory. The same recipe is also trained with
   longer memories (``--xl-mem-factors``: 2x and 4x the recipe's, 256 and 512), each scored with its own memory, and
   as a plain model of the same attention length: segments of ``segment + mem_len`` (256) without memory, scored on
   segments of that length. ``--train-only RUN ...`` trains some of these runs and exits, so they can train in
   concurrent calls sharing ``--runs``; the ``--parts xl`` call after them reuses the finished runs and scores them.
2. Evaluation speed: the XL model scores the first ``--speed-tokens`` validation tokens, cut into ``--speed-rows``
   rows read side by side, with memory, against recomputing a sliding window of ``mem_len + segment`` tokens of
   the row for every position (one forward per target, batched); both losses and the speed-up.
3. ``shakespeare-adaptive-span`` (Sukhbaatar et al. 2019) is trained twice through the one run path, on the same
   segments for the same steps with the same seed: as the recipe has it (spans learned under the L1 penalty), and
   with ``model.attention.params.span_loss=0`` (:data:`SPAN_FULL`), the same model without the span penalty: every
   span starts at the maximum S, beyond every distance of ``mem_len + segment`` keys, and only the language-model
   loss moves it (the JSON records the baseline's mean and smallest span, so how far it stayed from S is on record).
   Both are scored as part 1 scores the XL models (``stream_scores``: the validation stream in ``--rows`` rows, the
   training memory); the cost is the difference of their bits per character (``bpc_cost``; against the XL model
   with the same memory at evaluation too, when part 1 is in the JSON). Then the learned spans (mean, max, per
   layer and head), and training-step tokens/s with the learned spans against the same model with every span at
   its maximum (keys no span reaches are skipped; the soft mask itself is the same work), and the evaluation
   forward the same way, each with the SDPA and the FlexAttention implementation (whose per-head block mask skips
   the key blocks beyond a head's span), after checking FlexAttention's logits and span gradients against SDPA's.
4. Long documents: ``sst2long-minilm-chunks`` on majority documents built from SST-2 into ``--runs``
   (:mod:`attnkit.data.majority_documents`: about 1,800 word pieces each, labelled by the majority sentiment of
   their sentences, the deciding surplus of 16 sentences in one stretch anywhere in the document; training
   documents from SST-2's training sentences, dev documents from its dev sentences). all-MiniLM-L6-v2 reads them
   through its own window of 512 positions (up to 4 chunks of 510 word pieces), trained with ``data.long`` =
   ``truncate`` (the first 510 word pieces), ``average``, ``memory`` (4 memory tokens) and ``xl`` (Transformer-XL
   memory of every earlier chunk) for the same ``--chunk-steps`` optimizer
   steps on the same training documents (``data.limit`` = steps x batch), scored once on the dev documents after the
   last step: dev accuracy, training and wall seconds of each. The header and the JSON give the documents' lengths
   against the window and where their evidence sits. Each variant is written to the JSON when it finishes; a
   finished run in ``--runs`` is reused (``--skip-chunks`` leaves the part out).

``--parts`` (``xl``, ``speed``, ``span``, ``chunks``; default all) picks the parts; ``speed`` is part 2, ``span`` part 3.
Writes ``benchmarks/results/long-context-<device>-<date>.json`` after each finished part; a file of that device and
date is read first and only the keys of the parts run are replaced, so parts may run in separate calls.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import attnkit  # noqa: E402
from attnkit import recipes, runs  # noqa: E402
from attnkit.attention.adaptive_span import span_kernels, spans  # noqa: E402
from attnkit.data.segments import StreamSegments, XLLMTask  # noqa: E402
from attnkit.data.text import encode, read_text, split_tokens  # noqa: E402
from attnkit.data.tokenizer import load_tokenizer  # noqa: E402
from attnkit.models.gpt import GPT  # noqa: E402
from attnkit.objectives.causal_lm import causal_lm_loss  # noqa: E402
from attnkit.runs.path import resolve_configs, run  # noqa: E402
from benchmarks.common import environment, pick_device, read_day_json, synchronize, update_day_json  # noqa: E402
from benchmarks.common import parse_parts as common_parse_parts  # noqa: E402

LN2 = math.log(2)


def train(name: str, out: Path, root: str, quick: bool, device: torch.device, extra: list[str]) -> Path:
    """Train recipe ``name`` into ``out`` (a finished run is reused); return the run directory."""
    if not (out / "eval.json").exists():
        recipe = recipes.get(name)
        job = runs.job(recipe.task)
        resume = (out / "checkpoints" / "latest").exists()
        if (out / "run_config.json").exists() and not resume:  # a run cut before its first checkpoint
            raise SystemExit(f"{out} holds a run stopped before its first checkpoint; delete that folder to train it again")
        configs = resolve_configs(job, recipe=recipe, assignments=[f"train.device={device}", *extra], quick=quick,
                                  cuda=device.type == "cuda", root=root)
        run(job, configs, out, recipe=name, progress=False, resume=resume)
    return out


def xl_runs(args: argparse.Namespace, device: torch.device) -> dict[str, list[str]]:
    """Part 1's trainings of the ``shakespeare-xl`` recipe: run folder -> its assignments (the recipe itself, without
    memory, with each longer memory of ``--xl-mem-factors``, and the plain model of the same attention length)."""
    cfg = resolve_configs(runs.job("lm"), recipe=recipes.get("shakespeare-xl"), quick=args.quick, cuda=device.type == "cuda",
                          root=args.data_root, log=lambda s: None)
    seg, mem, context = cfg["data"].segment, cfg["data"].mem_len, cfg["model"].context  # type: ignore[attr-defined]
    out: dict[str, list[str]] = {"xl": [], "xl-no-memory": ["data.mem_len=0"]}
    for factor in args.xl_mem_factors:
        out[f"xl-memory-{factor * mem}"] = [f"data.mem_len={factor * mem}", f"model.context={max(context, seg + factor * mem)}"]
    plain = seg + mem  # the keys a query of the XL model reaches at most
    out[f"plain-{plain}"] = ["data.mem_len=0", f"data.segment={plain}", f"model.context={max(context, plain)}"]
    return out


def load_run(out: Path, device: torch.device) -> tuple[GPT, dict[str, Any], torch.Tensor]:
    """The saved model, its run config and the validation tokens it was scored on."""
    import json

    cfg = json.loads((out / "run_config.json").read_text())
    model = attnkit.load(out / "model").to(device).eval()
    tok = load_tokenizer(out / "tokenizer.json")
    d = cfg["data"]
    _, valid = split_tokens(encode(tok, read_text(d["text"])), model.config.context, d["train_fraction"])
    return model, cfg, valid.to(device)


def with_context(model: GPT, context: int) -> GPT:
    """``model`` rebuilt with a longer ``context`` and the same weights (the attention carries the positions)."""
    if context <= model.config.context:
        return model
    bigger = GPT(model.config.replace(context=context)).to(next(model.parameters()).device)
    bigger.load_state_dict(model.state_dict())
    return bigger.eval()


def stream_scores(model: GPT, valid: torch.Tensor, segment: int, mems: list[int], rows: int) -> dict[str, Any]:
    """Validation loss and bits per character with each memory length, same segments."""
    out = {}
    for m in mems:
        task = XLLMTask(valid, valid, segment=segment, mem_len=m, batch_size=rows, device=valid.device)
        loss = task.stream_loss(with_context(model, m + segment), m, rows=rows)
        out[str(m)] = {"loss": round(loss, 5), "bpc": round(loss / LN2, 5)}
    return out


@torch.no_grad()
def eval_speed(model: GPT, valid: torch.Tensor, segment: int, mem_len: int, n_tokens: int, batch: int, rows: int) -> dict[str, Any]:
    """XL evaluation with memory against a sliding window recomputed for every position, on the same targets.

    The first ``n_tokens`` validation tokens are cut into ``rows`` contiguous rows (as :class:`StreamSegments` cuts
    them) scored side by side: XL reads each row a segment at a time with its memory; the sliding window predicts
    every target of a row from the (up to) ``mem_len + segment`` tokens of that row before it, ``batch`` windows
    per forward. Both count the same targets; the losses stay on the device until the end.
    """
    device = valid.device
    length = mem_len + segment
    segments = StreamSegments(valid[: n_tokens + 1], rows, segment)
    synchronize(device)
    t0 = time.perf_counter()
    memories = model.new_memories(mem_len)
    total_xl, count = torch.zeros((), device=device), 0
    for s in segments:
        loss, n = causal_lm_loss(model(s.tokens[:, :-1], caches=memories).logits.float(), s.tokens[:, 1:])
        total_xl, count = total_xl + loss * n, count + int(s.tokens[:, 1:].numel())
    synchronize(device)
    xl_s, xl_loss = time.perf_counter() - t0, float(total_xl) / count
    # sliding window, row by row over the same targets: row position t (1 <= t <= steps * segment)
    per_row = len(segments) * segment
    t0 = time.perf_counter()
    total = torch.zeros((), device=device)
    for r in range(rows):
        row = segments.rows[r, : per_row + 1]
        full = torch.arange(length, per_row + 1, device=device)
        for i in range(0, len(full), batch):
            t = full[i : i + batch]
            idx = t[:, None] - length + torch.arange(length, device=device)  # (b, L)
            logits = model(row[idx]).logits[:, -1].float()  # (b, V)
            total = total + torch.nn.functional.cross_entropy(logits, row[t], reduction="sum")
        for t in range(1, min(length, per_row + 1)):  # the first positions of the row: its text so far
            logits = model(row[None, :t]).logits[:, -1].float()
            total = total + torch.nn.functional.cross_entropy(logits, row[t : t + 1], reduction="sum")
    synchronize(device)
    slide_s, slide_loss = time.perf_counter() - t0, float(total) / count
    return {"tokens": count, "rows": rows, "xl_seconds": round(xl_s, 4), "xl_bpc": round(xl_loss / LN2, 5),
            "sliding_seconds": round(slide_s, 4), "sliding_bpc": round(slide_loss / LN2, 5),
            "bpc_difference": round(abs(xl_loss - slide_loss) / LN2, 5),
            "speedup": round(slide_s / max(xl_s, 1e-9), 2), "window": length}


def step_tokens_per_s(model: GPT, valid: torch.Tensor, segment: int, mem_len: int, rows: int, steps: int,
                      train: bool = True) -> float:
    """Training-step throughput (forward + backward over consecutive segments with memory), tokens/s;
    ``train=False``: the evaluation forward alone (no dropout, no gradient).

    The memory grows by a segment per step until it holds ``mem_len`` positions, and each key length is a
    variant that compiled FlexAttention compiles on its first call; the untimed warm-up steps run until the
    memory is full, so every variant the timed steps use is compiled before the timing starts."""
    device = valid.device
    model.train(train)
    memories = model.new_memories(mem_len)
    warm = max(3, 1 + -(-mem_len // segment))  # steps 0 .. ceil(mem_len / segment) see every key length
    times = []
    for i, s in enumerate(StreamSegments(valid, rows, segment)):
        if i == steps + warm:
            break
        synchronize(device)
        t0 = time.perf_counter()
        with torch.set_grad_enabled(train):
            loss, _ = causal_lm_loss(model(s.tokens[:, :-1], caches=memories).logits, s.tokens[:, 1:])
        if train:
            loss.backward()
            model.zero_grad(set_to_none=True)
        synchronize(device)
        if i >= warm:
            times.append(time.perf_counter() - t0)
    model.eval()
    return rows * segment / statistics.median(times)


def span_flex_check(model: GPT, valid: torch.Tensor, segment: int, mem_len: int, rows: int) -> dict[str, float]:
    """The adaptive-span model's FlexAttention path against its SDPA path on two segments with memory (evaluation
    mode): largest logit difference, and on CUDA the largest difference of the span parameters' gradients."""
    kernels, grads, logits = span_kernels(model), {}, {}
    model.eval()
    for impl in ("sdpa", "flex"):
        for k in kernels:
            k.implementation = impl
        memories = model.new_memories(mem_len)
        with torch.set_grad_enabled(valid.is_cuda):  # FlexAttention's backward runs on CUDA only
            for _, s in zip(range(2), StreamSegments(valid, rows, segment)):
                out = model(s.tokens[:, :-1], caches=memories).logits.float()
            if valid.is_cuda:
                try:
                    causal_lm_loss(out, s.tokens[:, 1:])[0].backward()
                    grads[impl] = torch.cat([k.span_param.grad.clone() for k in kernels])
                except Exception as e:  # reported in the JSON; the timings still run
                    grads["error"] = f"{impl} backward: {type(e).__name__}: {e}"[:500]  # type: ignore[assignment]
                model.zero_grad(set_to_none=True)
        logits[impl] = out.detach()
    for k in kernels:
        k.implementation = "auto"
    check = {"max_abs_logit_diff": float((logits["flex"] - logits["sdpa"]).abs().max())}
    if "error" in grads:
        check["span_grad_error"] = grads["error"]  # type: ignore[assignment]
    elif grads:
        check["max_abs_span_grad_diff"] = float((grads["flex"] - grads["sdpa"]).abs().max())
        check["max_abs_span_grad"] = float(grads["sdpa"].abs().max())
    return check


SPAN_RECIPE = "shakespeare-adaptive-span"
# the baseline of part 3: the span recipe without its penalty (see the module docstring)
SPAN_FULL = ["model.attention.params.span_loss=0"]


def check_full_span(configs: dict[str, Any]) -> None:
    """Refuse a baseline whose spans could restrict attention: it needs ``init=1`` and S >= ``mem_len + segment``."""
    p, d = configs["model"].attention.params, configs["data"]
    keys = d.mem_len + d.segment
    if p.get("init") != 1.0 or p.get("max_span", 0) < keys:
        raise SystemExit(f"the full-span baseline needs model.attention.params.init=1.0 and max_span >= mem_len + segment "
                         f"({keys}); the recipe has init={p.get('init')} and max_span={p.get('max_span')}")


CHUNK_RECIPE = "sst2long-minilm-chunks"
LONG_MODES = ("truncate", "average", "memory", "xl")
CHUNK_STEPS, CHUNK_STEPS_QUICK = 500, 2
# the majority documents of part 4: (training, dev) documents; the quick variant reads only a few of each
CHUNK_DOCUMENTS, CHUNK_DOCUMENTS_QUICK = (4000, 500), (16, 8)


def chunk_documents(data_root: str, out: Path, quick: bool) -> dict[str, Any]:
    """Build the majority documents of part 4 from ``data_root/sst2`` into ``out`` (kept while their settings hold).

    Returns:
        The settings, the written paths, and the mean and quartiles of where the evidence stretch starts (the share
        of the document's words before it) in each split.
    """
    import json

    from attnkit.data.majority_documents import build_sst2_documents, compose_documents
    from attnkit.data.glue import read_classification_tsv

    n_train, n_dev = CHUNK_DOCUMENTS_QUICK if quick else CHUNK_DOCUMENTS
    settings = {"source": str(Path(data_root) / "sst2"), "train_documents": n_train, "dev_documents": n_dev, "words": 1500,
                "evidence": 16, "min_words": 8, "seed": 0}
    meta = out / "settings.json"
    if not (meta.is_file() and json.loads(meta.read_text()).get("settings") == settings):
        paths = build_sst2_documents(settings["source"], out, train_documents=n_train, dev_documents=n_dev,
                                     words=settings["words"], evidence=settings["evidence"], min_words=settings["min_words"],
                                     seed=settings["seed"])
        where = {}
        for split, n, seed in (("train", n_train, 0), ("dev", n_dev, 1)):  # build_sst2_documents' seeds
            src = read_classification_tsv(Path(settings["source"]) / f"{split}.tsv")
            at = sorted(d.evidence_at for d in compose_documents(src.texts, src.labels, documents=n, words=settings["words"],
                                                                 evidence=settings["evidence"], min_words=settings["min_words"],
                                                                 seed=seed))
            where[split] = {"mean": round(statistics.mean(at), 4),
                            "quartiles": [round(at[int(q * (len(at) - 1))], 4) for q in (0.25, 0.5, 0.75)]}
        meta.write_text(json.dumps({"settings": settings, "paths": {k: str(v) for k, v in paths.items()},
                                    "evidence_at": where}, indent=1) + "\n")
    saved = json.loads(meta.read_text())
    return {**saved["settings"], "paths": saved["paths"], "evidence_at": saved["evidence_at"],
            "label": "majority sentiment of the document's sentences; the balanced filler is shuffled and the surplus of "
                     "`evidence` sentences of the label's class sits in one stretch at a uniformly drawn place"}


def chunk_assignments(mode: str, steps: int, batch_size: int, files: dict[str, str]) -> list[str]:
    """The ``--set`` assignments of one long-document variant: ``steps`` optimizer steps over the first
    ``steps * batch_size`` training examples of ``files["train"]``, ``files["dev"]`` scored once after the last step.

    Every variant gets the same assignments but ``data.long``, so each trains on the same examples for the same steps.
    """
    return [f"data.train={files['train']}", f"data.dev={files['dev']}", f"data.long={mode}", f"train.steps={steps}", "data.steps_from_epochs=false", "data.eval_per_epoch=false",
            f"train.eval.every={steps}", f"train.log_every={min(steps, 500)}", f"data.limit={steps * batch_size}"]


def window_stats(lengths: list[int], chunk_len: int, max_chunks: int, positions: int) -> dict[str, Any]:
    """How far documents of ``lengths`` word pieces (without ``[CLS]``/``[SEP]``) exceed a window of ``chunk_len``.

    Args:
        lengths: word pieces of each document.
        chunk_len: word pieces per chunk (the window less its two specials).
        max_chunks: chunks a document is cut to.
        positions: the encoder's own position limit.

    Returns:
        Documents, mean and largest length, the share longer than one chunk, the mean chunks read (at most
        ``max_chunks``), the documents cut past ``max_chunks`` and those longer than the encoder's own positions.
    """
    chunks = [min(max(math.ceil(n / chunk_len), 1), max_chunks) for n in lengths]
    n = max(len(lengths), 1)
    return {"documents": len(lengths), "mean_tokens": round(sum(lengths) / n, 2), "max_tokens": max(lengths, default=0),
            "longer_than_one_chunk": round(sum(x > chunk_len for x in lengths) / n, 4),
            "mean_chunks": round(sum(chunks) / n, 3), "cut_past_max_chunks": sum(x > chunk_len * max_chunks for x in lengths),
            "longer_than_encoder_positions": sum(x + 2 > positions for x in lengths)}


def document_window(configs: dict[str, Any], cache: Path) -> dict[str, Any]:
    """The window the chunk recipe reads its documents through, against the encoder's positions and the documents'
    lengths (training examples within ``data.limit``, dev within ``data.eval_limit``); kept in ``cache``."""
    import json

    from attnkit.loading import load_model_and_tokenizer
    from attnkit.runs.base import model_dir
    from attnkit.runs.finetune import read_labelled
    from attnkit.training.finetune import encode_classification, encoder_of
    from attnkit.training.long_documents import UNLIMITED

    d = configs["data"]
    key = {"model": d.model, "train": d.train, "dev": d.dev, "limit": d.limit, "eval_limit": d.eval_limit,
           "max_len": d.max_len, "max_chunks": d.max_chunks}
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved["window"]
    model, tok = load_model_and_tokenizer(model_dir(d.model))
    positions = encoder_of(model).config.max_len
    window = min(d.max_len, positions)
    train_data, dev_data, labels = read_labelled("classify", d)
    out: dict[str, Any] = {"simulated": window < positions, "encoder_positions": positions, "window": window,
                           "chunk_len": window - 2, "max_chunks": d.max_chunks}
    for split, data in (("train", train_data), ("dev", dev_data)):
        if data is not None:
            lengths = [len(ids) - 2 for ids in encode_classification(tok, data, labels, UNLIMITED).ids]
            out[split] = window_stats(lengths, window - 2, d.max_chunks, positions)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "window": out}, indent=1) + "\n")
    return out


def window_line(w: dict[str, Any]) -> str:
    """The header line that says whether the documents exceed the encoder's positions or only a simulated window."""
    share = ", ".join(f"{100 * w[s]['longer_than_one_chunk']:.1f}% of {s} documents (mean {w[s]['mean_tokens']:.1f} word pieces, "
                      f"{w[s]['mean_chunks']:.2f} chunks)" for s in ("train", "dev") if s in w)
    beyond = sum(w[s]["longer_than_encoder_positions"] for s in ("train", "dev") if s in w)
    if w["simulated"]:
        return (f"SIMULATED long documents: the encoder has {w['encoder_positions']} positions, the recipe reads through a window "
                f"of {w['window']} (chunks of {w['chunk_len']} word pieces); longer than one window: {share}; "
                f"{beyond} documents exceed the encoder's own {w['encoder_positions']} positions")
    return f"window of {w['window']} positions (the encoder's limit); longer than one window: {share}"


def long_documents(args: argparse.Namespace, root: Path, device: torch.device, write: Any) -> dict[str, Any]:
    """Part 4: the chunk recipe with each ``data.long`` mode, same steps and examples; ``write(result)`` after each variant."""
    import json

    steps = args.chunk_steps or (CHUNK_STEPS_QUICK if args.quick else CHUNK_STEPS)
    recipe = recipes.get(CHUNK_RECIPE)
    job = runs.job(recipe.task)
    cuda = device.type == "cuda"
    if steps < 1:
        raise SystemExit(f"--chunk-steps={steps} must be positive")
    documents = chunk_documents(args.data_root, root / "sst2-long", args.quick)
    files = documents["paths"]
    batch = resolve_configs(job, recipe=recipe, quick=args.quick, cuda=cuda, root=args.data_root)["train"].batch_size
    configs = resolve_configs(job, recipe=recipe, assignments=chunk_assignments(LONG_MODES[0], steps, batch, files),
                              quick=args.quick, cuda=cuda, root=args.data_root)
    window = document_window(configs, root / "chunks-documents.json")
    examples = window["train"]["documents"]
    result: dict[str, Any] = {
        "recipe": CHUNK_RECIPE, "documents": documents, "steps_per_variant": steps, "batch_size": batch, "train_examples": examples,
        "epochs": round(steps * batch / max(examples, 1), 3), "dev_examples": window.get("dev", {}).get("documents"),
        "evaluation": "dev set scored once, after the last step (no selection on dev)",
        "batch_order": "truncate: length-bucketed batches (the plain classify path); average, memory: shuffled documents",
        "window": window, "variants": {}, "variants_done": [],
    }
    print(f"long documents: {CHUNK_RECIPE}, {steps} steps x {batch} per variant ({examples} training examples, "
          f"{result['epochs']} epochs), the same for {', '.join(LONG_MODES)}; dev accuracy after the last step")
    print(window_line(window))
    where = documents["evidence_at"].get("dev", {})
    print(f"majority documents: {documents['train_documents']} training / {documents['dev_documents']} dev, at least "
          f"{documents['words']} words, the majority won by {documents['evidence']} sentences in one stretch (dev: it starts "
          f"after {where.get('mean')} of the words on average, quartiles {where.get('quartiles')})")
    for mode in LONG_MODES:
        cdir = root / f"chunks-{mode}-{steps}steps"
        reused = (cdir / "eval.json").exists()
        t0 = time.perf_counter()
        train(CHUNK_RECIPE, cdir, args.data_root, args.quick, device, chunk_assignments(mode, steps, batch, files))
        wall_file = cdir / "benchmark_wall.json"
        if not reused:
            wall_file.write_text(json.dumps({"wall_seconds": round(time.perf_counter() - t0, 2)}) + "\n")
        wall = json.loads(wall_file.read_text())["wall_seconds"] if wall_file.is_file() else None
        final = json.loads((cdir / "eval.json").read_text())
        ran = json.loads((cdir / "run_config.json").read_text())["train"]["steps"]
        if ran != steps:
            raise SystemExit(f"{cdir} holds a run of {ran} steps, not {steps}; remove it or pick another --runs")
        name = "dev_accuracy_final" if final.get("best_step") == steps else "dev_accuracy_best_on_dev"
        seconds = final.get("seconds")
        result["variants"][mode] = {
            name: final.get("accuracy"), "dev_loss": final.get("loss"), "evaluated_at_step": final.get("best_step"),
            "steps": steps, "train_seconds": seconds, "steps_per_s": round(steps / seconds, 2) if seconds else None,
            "wall_seconds": wall, "reused": reused,
        }
        result["variants_done"].append(mode)
        print(f"  {mode:8s} dev accuracy {final.get('accuracy'):.4f} ({name}, step {final.get('best_step')}); training "
              f"{seconds} s ({result['variants'][mode]['steps_per_s']} steps/s); wall {wall} s" + (" (reused run)" if reused else ""))
        write(result)
    return result


PARTS = ("xl", "speed", "span", "chunks")
# the key of the JSON each part writes; "xl" and "speed" share one, so run those two in one call, not concurrently
PART_KEYS = {"xl": "xl", "speed": "xl", "span": "adaptive_span", "chunks": "long_documents"}


def parse_parts(text: str) -> list[str]:
    """``--parts``: a comma-separated subset of :data:`PARTS` (``all``: every part), in the order given."""
    return common_parse_parts(text, PARTS)


def main(argv: list[str] | None = None) -> int:
    import json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="../shared/data", help="holds tinyshakespeare/input.txt")
    p.add_argument("--runs", default="runs/long-context", help="where the trained runs go (reused when finished)")
    p.add_argument("--quick", action="store_true", help="the recipes' quick variants (CPU, seconds)")
    p.add_argument("--device", default=None)
    p.add_argument("--rows", type=int, default=8, help="rows the validation stream is cut into for scoring")
    p.add_argument("--speed-rows", type=int, default=8, help="rows scored side by side in the evaluation-speed comparison")
    p.add_argument("--speed-tokens", type=int, default=32768, help="validation tokens of the evaluation-speed comparison")
    p.add_argument("--xl-mem-factors", type=int, nargs="*", default=[2, 4],
                   help="part 1 also trains the XL recipe with these multiples of its memory (default 2 4; none: only the recipe's)")
    p.add_argument("--train-only", nargs="+", default=[], metavar="RUN",
                   help="only train these runs of part 1 into --runs and exit (xl, xl-no-memory, xl-memory-M, plain-L), so they "
                        "can train in concurrent calls; a later --parts xl reuses them")
    p.add_argument("--out-dir", default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--parts", type=parse_parts, default=list(PARTS),
                   help="comma-separated parts to run: xl (XL with and without memory), speed (evaluation with memory "
                        "against a sliding window), span (adaptive span), chunks (long documents); default all. The "
                        "results of the parts run are merged into the JSON of this device and date if there is one")
    p.add_argument("--skip-chunks", action="store_true", help="leave out the long-document classification runs")
    p.add_argument("--chunk-steps", type=int, default=None,
                   help=f"optimizer steps of each long-document variant, on steps x batch training examples "
                        f"(default {CHUNK_STEPS}; {CHUNK_STEPS_QUICK} with --quick)")
    args = p.parse_args(argv)
    parts = [x for x in args.parts if not (x == "chunks" and args.skip_chunks)]
    device = pick_device(args.device)
    root = Path(args.runs) / ("quick" if args.quick else "full")
    speed_tokens = min(args.speed_tokens, 256) if args.quick else args.speed_tokens
    speed_rows = min(args.speed_rows, 2) if args.quick else args.speed_rows
    name = "long-context" + ("-quick" if args.quick else "")
    out_dir = Path(args.out_dir) if args.out_dir else None
    env = environment(device)
    payload = read_day_json(name, env, out_dir)
    payload.update({"benchmark": "long_context", "quick": args.quick, "environment": env,
                    "command": " ".join([sys.executable, *sys.argv])})
    payload.setdefault("xl", {})
    payload.setdefault("adaptive_span", {})
    payload.setdefault("long_documents", {})
    payload.setdefault("commands", {})

    def write(part: str, done: bool) -> Path:
        """Write ``part``'s key of the JSON (the keys of other calls that day, also concurrent ones, are kept)."""
        def update(disk: dict[str, Any]) -> None:
            for k in ("benchmark", "quick", "command"):
                disk[k] = payload[k]
            disk[PART_KEYS[part]] = payload[PART_KEYS[part]]
            disk.setdefault("commands", {})[part] = payload["command"]
            if done:
                disk["parts_done"] = sorted(set(disk.get("parts_done", [])) | {part}, key=PARTS.index)

        return update_day_json(name, env, update, out_dir)

    def save(part: str) -> None:
        """Write the JSON with ``part`` finished."""
        print(f"wrote {write(part, True)} ({part})")

    trainings = xl_runs(args, device) if args.train_only or "xl" in parts or "speed" in parts else {}
    if args.train_only:
        unknown = [n for n in args.train_only if n not in trainings]
        if unknown:
            raise SystemExit(f"--train-only {unknown[0]}: part 1 trains {', '.join(trainings)}")
        for name in args.train_only:
            print(f"trained {train('shakespeare-xl', root / name, args.data_root, args.quick, device, trainings[name])}")
        return 0
    if "xl" in parts or "speed" in parts:
        xl_dir = train("shakespeare-xl", root / "xl", args.data_root, args.quick, device, trainings["xl"])
        model, cfg, valid = load_run(xl_dir, device)
        seg, mem = cfg["data"]["segment"], cfg["data"]["mem_len"]
    if "xl" in parts:
        nomem_dir = train("shakespeare-xl", root / "xl-no-memory", args.data_root, args.quick, device, trainings["xl-no-memory"])
        nomem, _, _ = load_run(nomem_dir, device)
        payload["xl"].update({
            "segment": seg, "mem_len": mem,
            "trained_with_memory": stream_scores(model, valid, seg, [0, mem, 2 * mem], args.rows),
            "trained_without_memory": stream_scores(nomem, valid, seg, [0, mem], args.rows),
        })
        longer = {}
        for factor in args.xl_mem_factors:
            m = factor * mem
            run_dir = train("shakespeare-xl", root / f"xl-memory-{m}", args.data_root, args.quick, device, trainings[f"xl-memory-{m}"])
            longer[str(m)] = stream_scores(load_run(run_dir, device)[0], valid, seg, [m], args.rows)[str(m)]
        plain_len = seg + mem  # the keys a query of the XL model reaches at most
        plain_dir = train("shakespeare-xl", root / f"plain-{plain_len}", args.data_root, args.quick, device,
                          trainings[f"plain-{plain_len}"])
        payload["xl"].update({
            "trained_with_longer_memory": longer,  # memory length -> scores with that memory at evaluation
            "plain_same_attention_length": {"segment": plain_len,
                                            **stream_scores(load_run(plain_dir, device)[0], valid, plain_len, [0], args.rows)["0"]},
        })
        print(f"XL: {payload['xl']}")
        save("xl")
    if "speed" in parts:
        payload["xl"].update({"segment": seg, "mem_len": mem,
                              "eval_speed": eval_speed(model, valid, seg, mem, max(speed_tokens, 4 * speed_rows * (seg + 1)), batch=64 if args.quick else 512,
                                                    rows=speed_rows)})
        print(f"XL evaluation speed: {payload['xl']['eval_speed']}")
        save("speed")

    if "span" in parts:
        span_recipe = recipes.get(SPAN_RECIPE)
        check_full_span(resolve_configs(runs.job("lm"), recipe=span_recipe, assignments=SPAN_FULL, quick=args.quick,
                                        cuda=device.type == "cuda", root=args.data_root))
        span_dir = train(SPAN_RECIPE, root / "adaptive-span", args.data_root, args.quick, device, [])
        full_dir = train(SPAN_RECIPE, root / "adaptive-span-full", args.data_root, args.quick, device, SPAN_FULL)
        smodel, scfg, svalid = load_run(span_dir, device)
        sseg, smem = scfg["data"]["segment"], scfg["data"]["mem_len"]
        learned = spans(smodel)
        fmodel, _, _ = load_run(full_dir, device)
        full_spans = spans(fmodel)
        bpc_learned = stream_scores(smodel, svalid, sseg, [smem], args.rows)[str(smem)]["bpc"]
        bpc_full = stream_scores(fmodel, svalid, sseg, [smem], args.rows)[str(smem)]["bpc"]
        del fmodel
        xl_same = payload["xl"].get("trained_with_memory", {}).get(str(smem), {}).get("bpc")
        if payload["xl"].get("segment") != sseg:
            xl_same = None
        cost = {"bpc_learned_spans": bpc_learned, "bpc_full_spans": bpc_full, "bpc_cost": round(bpc_learned - bpc_full, 5),
                "full_span_model": {"assignments": SPAN_FULL, "span_mean": full_spans["span_mean"], "span_min": min(
                    min(h) for h in full_spans["spans"]) if full_spans.get("spans") else None},
                "baseline": f"{SPAN_RECIPE} with {' '.join(SPAN_FULL)}: the same model, data, steps and seed without the span "
                            f"penalty, every span starting at its maximum (beyond all {smem + sseg} keys' distances)",
                "scored_on": f"validation stream in {args.rows} rows, segments of {sseg}, memory {smem} (the first segment "
                             "of each row without memory), as part 1 scores the XL models"}
        if xl_same is not None:
            cost["bpc_cost_against_xl"] = round(bpc_learned - xl_same, 5)
            cost["xl_note"] = (f"shakespeare-xl (trained with memory {payload['xl'].get('mem_len')}) scored with memory {smem} "
                               "the same way; a different model size of memory at training")
        print(f"adaptive span: {bpc_learned:.5f} bpc with the learned spans, {bpc_full:.5f} without the span penalty "
              f"(cost {cost['bpc_cost']:+.5f})")
        rows = 8 if args.quick else 64
        steps = 5 if args.quick else 30
        kernels = span_kernels(smodel)
        flex_check = span_flex_check(smodel, svalid, sseg, smem, rows)
        print(f"adaptive span, FlexAttention against SDPA: {flex_check}")
        saved = [k.span_param.detach().clone() for k in kernels]
        speed: dict[str, float] = {}
        for impl in ("sdpa", "flex"):  # training steps with attention dropout take SDPA under either setting
            for k in kernels:
                k.implementation = impl
            for which in ("learned", "max"):
                with torch.no_grad():
                    for k, saved_p in zip(kernels, saved):
                        k.span_param.copy_(saved_p) if which == "learned" else k.span_param.fill_(1.0)  # max: every head at S
                if impl == "sdpa" or device.type == "cuda":
                    speed[f"train_step_{impl}_{which}"] = round(step_tokens_per_s(smodel, svalid, sseg, smem, rows, steps), 1)
                speed[f"eval_forward_{impl}_{which}"] = round(step_tokens_per_s(smodel, svalid, sseg, smem, rows, steps, train=False), 1)
        with torch.no_grad():
            for k, saved_p in zip(kernels, saved):
                k.span_param.copy_(saved_p)
                k.implementation = "auto"
        tps_learned, tps_max = speed["train_step_sdpa_learned"], speed["train_step_sdpa_max"]
        payload["adaptive_span"] = {
            "max_span": kernels[0].max_span, "ramp": kernels[0].ramp, "span_loss": kernels[0].span_loss, "segment": sseg,
            "mem_len": smem, **learned, "span_mean_fraction_of_max": round(learned["span_mean"] / kernels[0].max_span, 4),
            "bpc": bpc_learned, **cost,
            "tokens_per_s_learned_spans": round(tps_learned, 1), "tokens_per_s_max_spans": round(tps_max, 1),
            "tokens_per_s": speed, "flex_against_sdpa": flex_check,
        }
        print(f"adaptive span: {payload['adaptive_span']}")
        save("span")

    if "chunks" in parts:
        def write_variant(result: dict[str, Any]) -> None:
            """Write the JSON with the variants finished so far (the part counts as done only when all are)."""
            payload["long_documents"] = result
            print(f"wrote {write('chunks', False)} (chunks: {', '.join(result['variants_done'])})")

        long_documents(args, root, device, write_variant)
        save("chunks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
