"""Long-sequence kernels inside a model: an encoder stack, eager and compiled whole, against dense SDPA.

Run from the repository root (a CUDA device; ``--device cpu --quick`` is a smoke test):

    python benchmarks/long_model.py                       # T=4096, 4 layers of bert-base width
    python benchmarks/long_model.py --lengths 4096 16384 --kernels dense bigbird@t64 linear

``benchmarks/attention.py`` times one attention call (batch 1, 12 heads), where a kernel that
launches a compiled function pays its Python layers (dynamo's guards, the AOTAutograd
wrappers, kernel launches) on every call: at 4k that is more than BigBird's GPU time. Here
the kernels sit in :class:`attnkit.models.encoder_classifier.EncoderClassifier` (d_model 768,
12 heads of 64, d_ff 3072, pre-norm, no dropout, bf16 weights), timed forward + backward of
the summed logits. ``eager`` runs the model as written (each sparse kernel still calls its own
compiled function); ``compiled`` is ``torch.compile(model)``, one compiled graph around every
layer, which is how FlexAttention is meant to be used. Run eager first: on PyTorch 2.11 a
compiled trace that has to build a block mask breaks its graph there (``copy.copy`` in
``Pattern.mask_fn`` is not traced), and with compiled rows first the later eager rows of the
same process ran the unfused FlexAttention (5.4 GB at 4k, 20x slower; H200, session 5). Every row of one run sees the same
token ids; the table gives each row's time and its speed-up over the dense row of the same
mode and length. The JSON goes to ``benchmarks/results/long-model-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from attnkit.attention.benchmark import KERNELS, VARIANTS  # noqa: E402
from attnkit.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig  # noqa: E402
from attnkit.models.transformer import AttentionConfig  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)
for _name in ("recompile_limit", "cache_size_limit"):
    if hasattr(torch._dynamo.config, _name):
        setattr(torch._dynamo.config, _name, 256)



def attention_config(name: str) -> AttentionConfig:
    """``name`` from ``attnkit bench``'s kernels (``dense`` is attnkit's scaled dot product on SDPA),
    optionally ``@`` a variant of ``attnkit.attention.benchmark.VARIANTS`` (``@t64``, ``@cg``, ``@t64cg``; CUDA
    graphs act in eager mode only: a compiled model traces the kernel)."""
    base, _, variant = name.partition("@")
    kind, params = KERNELS[base]
    if kind == "sdpa":
        return AttentionConfig(kind="scaled_dot")
    return AttentionConfig(kind=kind, params={**params, **VARIANTS.get(variant, {})})


def make_step(name: str, mode: str, t: int, layers: int, device: torch.device, dtype: torch.dtype) -> Callable[[int], None]:
    torch.manual_seed(0)
    cfg = EncoderClassifierConfig(vocab_size=1000, num_labels=2, max_len=t, d_model=768, n_heads=12, n_layers=layers,
                                  d_ff=3072, dropout=0.0, norm_position="pre", attention=attention_config(name))
    model = EncoderClassifier(cfg).to(device, dtype)
    fn: Callable[..., Any] = torch.compile(model) if mode == "compiled" else model
    ids = torch.randint(1, 1000, (1, t), generator=torch.Generator().manual_seed(t)).to(device)

    def step(_i: int) -> None:
        fn(ids).logits.float().sum().backward()
        for p in model.parameters():
            p.grad = None

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="T=256, 2 layers, eager only (a smoke test)")
    ap.add_argument("--lengths", nargs="+", type=int, default=[4096])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--kernels", nargs="+", default=["dense", "bigbird", "bigbird@t64", "linear", "sliding_window"])
    ap.add_argument("--modes", nargs="+", default=["eager", "compiled"], choices=["compiled", "eager"],
                    help="in this order; eager first builds the block masks, so the compiled trace finds them cached")
    ap.add_argument("--suffix", default="")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args()
    device = common.pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    lengths, layers, modes = (([256], 2, ["eager"]) if args.quick else (args.lengths, args.layers, args.modes))
    warmup, iters, rounds = (3, 5, 2) if device.type == "cuda" else (1, 2, 1)
    results: list[dict[str, Any]] = []
    payload = {"environment": common.environment(device), "shapes": {"batch": 1, "layers": layers, "d_model": 768, "heads": 12,
                                                                     "head_dim": 64, "d_ff": 3072, "dtype": str(dtype)},
               "results": results}
    for t in lengths:
        for mode in modes:
            for name in args.kernels:
                row: dict[str, Any] = {"name": name, "mode": mode, "length": t}
                try:
                    step = make_step(name, mode, t, layers, device, dtype)
                    timing = common.time_interleaved({name: step}, device, warmup=warmup, iters=iters, rounds=rounds)[name]
                    row.update(timing=timing.to_dict(), median_ms=timing.median_ms, peak_bytes=common.step_peak_memory(step, device))
                except Exception as e:  # noqa: BLE001  (recorded, not fatal: the other rows still run)
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                step = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                results.append(row)
                print(f"{name:<16}{mode:<10}{t:>7}  {row.get('median_ms', float('nan')):9.3f} ms  {row.get('error', '')}", flush=True)
                common.write_json("long-model", payload, args.out_dir, suffix=args.suffix)
    print(summary(results))
    print("wrote", common.write_json("long-model", payload, args.out_dir, suffix=args.suffix))


def summary(results: list[dict[str, Any]]) -> str:
    dense = {(r["length"], r["mode"]): r["median_ms"] for r in results if r["name"] == "dense" and "median_ms" in r}
    rows = []
    for r in results:
        if "median_ms" not in r:
            rows.append([r["name"], r["mode"], str(r["length"]), "-", "-", "-", r.get("error", "")])
            continue
        ref = dense.get((r["length"], r["mode"]))
        mem = "-" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2**20:.0f}"
        rows.append([r["name"], r["mode"], str(r["length"]), f"{r['median_ms']:.3f}", mem,
                     f"{ref / r['median_ms']:.2f}x" if ref else "-", ""])
    return common.markdown_table(["kernel", "mode", "T", "fwd+bwd ms", "peak MiB", "dense / this", "error"], rows)


if __name__ == "__main__":
    main()
