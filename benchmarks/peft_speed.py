"""LoRA and QLoRA training steps: attnkit against Hugging Face + peft on the same imported weights, one process.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/peft_speed.py                        # one GPU, bf16 autocast, all parts
    python benchmarks/peft_speed.py --parts bert,gpt2       # some parts
    python benchmarks/peft_speed.py --quick --device cpu    # smoke run: tiny configs, a few steps

Three parts (``--parts``, default all):

* ``bert``: Hugging Face ``BertForSequenceClassification`` (``BertConfig()``: bert-base, random
  weights, 2 labels), batch ``32 x 128``. Modes: peft LoRA (r=8, alpha 16, ``query``/``value``,
  the classifier in ``modules_to_save``), attnkit LoRA on the same imported model (the ``q`` and
  ``v`` slices of the fused projection, the head trained), and full fine-tuning of each; with
  ``--compile on`` (the default on CUDA) also attnkit's LoRA model under ``torch.compile``.
* ``gpt2``: ``GPT2LMHeadModel`` with GPT-2 medium's sizes (24 layers, d 1024), batch ``8 x 1024``,
  next-token loss. Modes: peft LoRA on ``c_attn`` (``fan_in_fan_out``), attnkit LoRA on
  ``qkv_proj``, and full fine-tuning of each (and attnkit's LoRA compiled).
* ``qlora``: an attnkit GPT with GPT-2 large's sizes (36 layers, d 1280, 774M parameters, random
  weights), batch ``4 x 1024``: LoRA (r=8 on ``qkv_proj``) on a bf16 base against QLoRA (the same
  LoRA on an NF4 base with double quantization, compute in bf16) and against QLoRA with
  ``quantize_embeddings`` (the tied token embedding table in NF4 too; the paper keeps it in
  bf16). Reported: the bytes of the frozen weights of each and their ratio to bf16
  (``weight_ratio`` with the table in bf16, ``weight_ratio_quantized_embeddings`` with it in NF4),
  the linear layers alone, step times, and the NF4 models' steps with ``torch.compile`` (which
  fuses the dequantization into the matmul's producer).

One training step is forward, loss, backward and a fused AdamW step over the trainable
parameters, under bf16 autocast (fp32 weights; the QLoRA part keeps the frozen base in bf16 or
NF4). Before timing, each LoRA pair is checked for parity: peft's adapter (random ``B``) is saved
and loaded onto the attnkit model (:func:`attnkit.peft.load_adapter_into`), and the fp32 logits
must agree within 1e-4. Times are medians of interleaved rounds with CUDA events. Memory is
reported twice: ``peak_step_bytes``, the step's allocation above what existed before it
(activations and gradients, measured after a first step so the optimizer state exists), and
``held_bytes``, the weights plus a gradient and two AdamW moments per trainable parameter.
Results go to
``benchmarks/results/peft-speed-<device>-<date>.json`` (``peft-speed-<parts>-...`` for a subset of ``--parts``),
written as each piece finishes: the QLoRA part's weight figures before any timing, every part's parity
check before its timing, each mode's first step (``first_call_s``) and memory as it is measured, and the
interleaved timings after each round. A file of that name, device and date is read first and only the
parts run are replaced, so a call cut short keeps what it measured and later calls add to it.
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

PARTS = ("bert", "gpt2", "qlora")


def _step(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], loss_fn: Callable[..., torch.Tensor],
          device: torch.device) -> Callable[[int], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    model.train()

    def step(i: int) -> None:
        b = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = loss_fn(model, b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def _hf_cls_loss(m: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(m(input_ids=b["ids"]).logits.float(), b["y"])


def _ak_cls_loss(m: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(m(b["ids"]).logits.float(), b["y"])


def _hf_lm_loss(m: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = m(input_ids=b["ids"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), b["ids"][:, 1:].flatten())


def _ak_lm_loss(m: torch.nn.Module, b: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = m(b["ids"]).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), b["ids"][:, 1:].flatten())


def _parity(hf_peft: torch.nn.Module, hf_dir: str, ak_model: torch.nn.Module, ids: torch.Tensor, hf_logits: Callable[[], torch.Tensor],
            ak_logits: Callable[[torch.nn.Module], torch.Tensor]) -> float:
    """Save peft's adapter, load it onto the attnkit model, compare fp32 logits; return the max difference."""
    from attnkit.peft import load_adapter_into

    with tempfile.TemporaryDirectory() as d:
        hf_peft.save_pretrained(d)
        load_adapter_into(ak_model, d, base=hf_dir)
    hf_peft.eval()
    ak_model.eval()
    with torch.no_grad():
        diff = (hf_logits() - ak_logits(ak_model)).abs().max().item()
    if diff > 1e-4:
        raise SystemExit(f"parity check failed: max |logit difference| {diff:.2e} > 1e-4")
    return diff


def _held_bytes(model: torch.nn.Module) -> int:
    """Weights and buffers, plus a gradient and AdamW's two moments for each trainable parameter."""
    params = {id(p): p for p in model.parameters()}.values()
    held = sum(p.numel() * p.element_size() for p in params) + sum(b.numel() * b.element_size() for b in model.buffers())
    return held + sum(3 * p.numel() * 4 for p in params if p.requires_grad)


Report = Callable[[dict[str, Any]], None]


def _time(modes: dict[str, Callable[[int], None]], device: torch.device, quick: bool,
          models: dict[str, torch.nn.Module] | None = None, report: Report | None = None) -> dict[str, Any]:
    """Each mode's first step and step memory, then every mode timed in interleaved rounds.

    ``report`` gets the rows so far after each mode's first step and memory, and after each timing round.
    """
    out: dict[str, Any] = {}

    def publish() -> None:
        if report is not None:
            report(out)

    for name, step in list(modes.items()):
        common.synchronize(device)
        t0 = time.perf_counter()
        try:
            step(0)  # the optimizer's state exists before memory is measured (a compiled mode compiles here)
        except Exception as e:  # noqa: BLE001 - a mode that fails (a compiler error) is recorded, the others go on
            out[name] = {"error": str(e).splitlines()[0][:300]}
            print(f"  {name:<24} failed: {out[name]['error']}", flush=True)
            del modes[name]
            publish()
            continue
        common.synchronize(device)
        out[name] = {"first_call_s": time.perf_counter() - t0, "peak_step_bytes": common.step_peak_memory(step, device)}
        if models and name in models:
            out[name]["held_bytes"] = _held_bytes(models[name])
        publish()

    def on_round(timings: dict[str, common.Timing]) -> None:
        for name, t in timings.items():
            out[name].update(t.to_dict())
        publish()

    timings = common.time_interleaved(modes, device, warmup=2 if quick else 10, iters=2 if quick else 20, rounds=1 if quick else 3,
                                      on_round=on_round)
    for name, t in timings.items():
        mem = out[name]["peak_step_bytes"]
        peak = f", step peak {mem / 2**30:.2f} GiB" if mem is not None else ""
        print(f"  {name:<24} {t.median_ms:8.2f} ms/step (spread {t.spread_ms:.2f}){peak}", flush=True)
    return out


def _ratio(res: dict[str, Any], slow: str, fast: str) -> float | None:
    """``slow`` time over ``fast`` time, or None when either mode did not run."""
    if "median_ms" not in res.get(slow, {}) or "median_ms" not in res.get(fast, {}):
        return None
    return res[slow]["median_ms"] / res[fast]["median_ms"]


def _lora_and_full(hf_lora: torch.nn.Module, ak_lora: torch.nn.Module, hf_full: torch.nn.Module, ak_full: torch.nn.Module,
                   batches: list[dict[str, torch.Tensor]], losses: tuple[Callable, Callable], device: torch.device, quick: bool,
                   compile_: bool, report: Report | None = None) -> dict[str, Any]:
    """Time LoRA (peft and attnkit, both from B = 0 as LoRA trains) against full fine-tuning of each, same batches."""
    hf_loss, ak_loss = losses
    with torch.no_grad():
        for model in (hf_lora, ak_lora):
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.zero_()
    modes = {
        "hf+peft lora": _step(hf_lora, batches, hf_loss, device),
        "attnkit lora": _step(ak_lora, batches, ak_loss, device),
        "hf full": _step(hf_full, batches, hf_loss, device),
        "attnkit full": _step(ak_full, batches, ak_loss, device),
    }
    if compile_:
        modes["attnkit lora compiled"] = _step(torch.compile(ak_lora), batches, ak_loss, device)
    return _time(modes, device, quick, {"hf+peft lora": hf_lora, "attnkit lora": ak_lora, "hf full": hf_full, "attnkit full": ak_full},
                 report)


def _speedups(res: dict[str, Any]) -> dict[str, float | None]:
    """peft's LoRA step time over attnkit's, eager and compiled (None for a mode not timed yet)."""
    return {"lora_speedup": _ratio(res, "hf+peft lora", "attnkit lora"),
            "lora_speedup_compiled": _ratio(res, "hf+peft lora", "attnkit lora compiled")}


def part_bert(device: torch.device, quick: bool, compile_: bool, save: Report) -> dict[str, Any]:
    import peft
    import transformers

    import attnkit
    from attnkit.peft import trainable_parameters

    sizes = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512) if quick else {}
    batch, seq = (4, 32) if quick else (32, 128)
    torch.manual_seed(0)
    hf_dir = tempfile.mkdtemp()
    transformers.BertForSequenceClassification(transformers.BertConfig(**sizes)).save_pretrained(hf_dir)
    g = torch.Generator().manual_seed(0)
    batches = [{"ids": torch.randint(1000, 30000, (batch, seq), generator=g).to(device),
                "y": torch.randint(0, 2, (batch,), generator=g).to(device)} for _ in range(4)]
    cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS", init_lora_weights=False)
    hf_lora = peft.get_peft_model(transformers.BertForSequenceClassification.from_pretrained(hf_dir), cfg).to(device)
    ak_lora = attnkit.load(hf_dir).to(device)
    ids = batches[0]["ids"]
    diff = _parity(hf_lora, hf_dir, ak_lora, ids, lambda: hf_lora(input_ids=ids).logits, lambda m: m(ids).logits)
    print(f"bert: parity {diff:.2e}; {trainable_parameters(ak_lora)}")
    row: dict[str, Any] = {"batch": batch, "seq": seq, "parity_max_abs": diff, "trainable": str(trainable_parameters(ak_lora)),
                           "modes": {}}
    save(row)

    def report(res: dict[str, Any]) -> None:
        row.update(modes=res, **_speedups(res))
        save(row)

    hf_full = transformers.BertForSequenceClassification.from_pretrained(hf_dir).to(device)
    _lora_and_full(hf_lora, ak_lora, hf_full, attnkit.load(hf_dir).to(device), batches, (_hf_cls_loss, _ak_cls_loss), device,
                   quick, compile_, report)
    return row


def part_gpt2(device: torch.device, quick: bool, compile_: bool, save: Report) -> dict[str, Any]:
    import peft
    import transformers

    import attnkit

    sizes = dict(n_embd=64, n_layer=2, n_head=4, n_positions=128) if quick else dict(n_embd=1024, n_layer=24, n_head=16)
    batch, seq = (2, 64) if quick else (8, 1024)
    torch.manual_seed(0)
    hf_dir = tempfile.mkdtemp()
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**sizes)).save_pretrained(hf_dir)
    g = torch.Generator().manual_seed(0)
    batches = [{"ids": torch.randint(0, 50257, (batch, seq), generator=g).to(device)} for _ in range(2)]
    cfg = peft.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True, task_type="CAUSAL_LM", init_lora_weights=False)
    hf_lora = peft.get_peft_model(transformers.GPT2LMHeadModel.from_pretrained(hf_dir), cfg).to(device)
    ak_lora = attnkit.load(hf_dir).to(device)
    ids = batches[0]["ids"][:1, :128]
    diff = _parity(hf_lora, hf_dir, ak_lora, ids, lambda: hf_lora(input_ids=ids).logits, lambda m: m(ids).logits)
    print(f"gpt2: parity {diff:.2e}")
    row: dict[str, Any] = {"batch": batch, "seq": seq, "parity_max_abs": diff, "modes": {}}
    save(row)

    def report(res: dict[str, Any]) -> None:
        for name in ("hf+peft lora", "attnkit lora", "attnkit lora compiled"):
            if "median_ms" in res.get(name, {}):
                res[name]["tokens_per_s"] = batch * seq / (res[name]["median_ms"] / 1e3)
        row.update(modes=res, **_speedups(res))
        save(row)

    hf_full = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).to(device)
    _lora_and_full(hf_lora, ak_lora, hf_full, attnkit.load(hf_dir).to(device), batches, (_hf_lm_loss, _ak_lm_loss), device,
                   quick, compile_, report)
    return row


def _weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the frozen weights: parameters that do not train, and buffers (NF4 data and constants)."""
    seen: set[int] = set()
    total = 0
    for t in [*[p for p in model.parameters() if not p.requires_grad], *model.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _linear_bytes(model: torch.nn.Module) -> int:
    """Bytes of the frozen linear layers alone (nn.Linear weights and biases, or NF4 data, constants and biases)."""
    from attnkit.peft import NF4Linear

    total = 0
    embeddings = {id(e.weight) for e in model.modules() if isinstance(e, torch.nn.Embedding)}
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, NF4Linear)):
            params = [p for p in m.parameters(recurse=False) if not p.requires_grad and id(p) not in embeddings]  # not a tied output layer
            buffers = [b for n, b in m.named_buffers(recurse=False) if n not in ("code4", "code8")]  # the codes are shared tables
            total += sum(t.numel() * t.element_size() for t in [*params, *buffers])
    return total


def part_qlora(device: torch.device, quick: bool, compile_: bool, save: Report) -> dict[str, Any]:
    from attnkit.models.gpt import GPT, GPTConfig
    from attnkit.peft import LoRAConfig, apply_lora, trainable_parameters

    sizes = dict(d_model=64, n_layers=2, n_heads=4, context=128) if quick else dict(d_model=1280, n_layers=36, n_heads=20, context=1024)
    batch, seq = (2, 64) if quick else (4, 1024)
    cfg = GPTConfig(vocab_size=50257, activation="gelu_tanh", **sizes)
    g = torch.Generator().manual_seed(0)
    batches = [{"ids": torch.randint(0, 50257, (batch, seq), generator=g).to(device)} for _ in range(2)]
    models = {}
    variants = (("bf16 lora", "none", False), ("qlora nf4", "nf4", False), ("qlora nf4+emb", "nf4", True))
    for name, quantize, embeddings in variants:
        torch.manual_seed(0)
        model = GPT(cfg).to(device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
        models[name] = apply_lora(model, LoRAConfig(r=8, alpha=16, targets=("qkv",), quantize=quantize, quantize_embeddings=embeddings))
    weights = {name: _weight_bytes(m) for name, m in models.items()}
    linear = {name: _linear_bytes(m) for name, m in models.items()}
    x = batches[0]["ids"][:1, :32]
    with torch.no_grad():
        ref = models["bf16 lora"](x).logits.float()
        err = {name: (ref - models[name](x).logits.float()).abs().max().item() for name in ("qlora nf4", "qlora nf4+emb")}
    ratio = {name: weights[name] / weights["bf16 lora"] for name in ("qlora nf4", "qlora nf4+emb")}
    print(f"qlora: {trainable_parameters(models['qlora nf4'])}; linear layers alone {linear['qlora nf4'] / linear['bf16 lora']:.3f}x of bf16")
    print(f"  {'frozen weights':<24} {'MiB':>8} {'x bf16':>8} {'max |logit change|':>20}")
    for name in models:
        change = f"{err[name]:20.3f}" if name in err else f"{'-':>20}"
        print(f"  {name:<24} {weights[name] / 2**20:8.0f} {weights[name] / weights['bf16 lora']:8.3f} {change}")
    row: dict[str, Any] = {
        "batch": batch, "seq": seq, "weight_bytes": weights,
        "weight_ratio": ratio["qlora nf4"], "weight_ratio_quantized_embeddings": ratio["qlora nf4+emb"],
        "linear_bytes": linear, "linear_ratio": linear["qlora nf4"] / linear["bf16 lora"],
        "quantization_logit_change": err["qlora nf4"], "quantization_logit_change_quantized_embeddings": err["qlora nf4+emb"],
        "modes": {},
    }
    save(row)  # the weight figures, before any timing

    def report(res: dict[str, Any]) -> None:
        row.update(modes=res, **{key: _ratio(res, mode, "bf16 lora") for key, mode in (
            ("step_ratio", "qlora nf4"), ("step_ratio_compiled", "qlora nf4 compiled"),
            ("step_ratio_quantized_embeddings", "qlora nf4+emb"),
            ("step_ratio_quantized_embeddings_compiled", "qlora nf4+emb compiled"))})
        save(row)

    modes = {name: _step(m, batches, _ak_lm_loss, device) for name, m in models.items()}
    if compile_:
        for name in ("qlora nf4", "qlora nf4+emb"):
            modes[f"{name} compiled"] = _step(torch.compile(models[name]), batches, _ak_lm_loss, device)
    _time(modes, device, quick, report=report)
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny configs and few steps (a CPU smoke run)")
    ap.add_argument("--compile", choices=("on", "off"), default=None,
                    help="also time attnkit's LoRA and QLoRA steps under torch.compile (default: on for CUDA)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default benchmarks/results)")
    args = ap.parse_args(argv)
    device = common.pick_device(args.device)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    compile_ = (args.compile or ("on" if device.type == "cuda" else "off")) == "on"
    import peft
    import transformers

    env = common.environment(device)
    env.update(transformers=transformers.__version__, peft=peft.__version__)
    name = "peft-speed" if set(parts) == set(PARTS) else "peft-speed-" + "-".join(p for p in PARTS if p in parts)
    suffix = "-quick" if args.quick else ""
    payload = common.read_day_json(name, env, args.out_dir, suffix=suffix)  # parts of earlier calls that day are kept
    payload.update(environment=env, quick=args.quick)
    results: dict[str, Any] = payload.setdefault("results", {})
    commands: dict[str, str] = payload.setdefault("commands", {})

    def saver(part: str) -> Report:
        def save(row: dict[str, Any]) -> None:
            results[part] = row
            commands[part] = env["command"]
            common.write_json(name, payload, args.out_dir, suffix=suffix)
        return save

    for part, run_part in (("bert", part_bert), ("gpt2", part_gpt2), ("qlora", part_qlora)):
        if part in parts:
            run_part(device, args.quick, compile_, saver(part))
            print(f"wrote {common.results_path(name, env, args.out_dir, suffix=suffix)} ({part} finished)", flush=True)


if __name__ == "__main__":
    main()
