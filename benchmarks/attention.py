"""Long-sequence attention kernels against dense SDPA and Hugging Face's Longformer / BigBird modules.

Run from the repository root:

    python benchmarks/attention.py                        # CUDA: issue 6's shapes, bf16, fwd+bwd
    python benchmarks/attention.py --quick --device cpu   # tiny sizes: a smoke test

Shapes: batch 1, 12 heads, head dim 64, bf16 inputs, forward + backward (the gradient of
q, k and v). Every case sees the same random inputs. Rows:

* ``dense``: ``F.scaled_dot_product_attention`` without a mask (FlashAttention on Hopper);
* attnkit kernels through ``attnkit.attention.get`` (on CUDA the sparse patterns run on
  FlexAttention with cached block masks; their compile time is spent in the warm-up);
* ``hf_longformer``: ``transformers``' ``LongformerSelfAttention`` (attention window 512, the
  same band as ``sliding_window`` w=512) on ``(B, T, 768)`` hidden states; it includes its q/k/v
  projections, so ``attnkit_proj+sliding_window`` adds the same three projections (one fused
  ``Linear(768, 2304)``) in front of attnkit's kernel for a like-for-like row;
* ``hf_bigbird``: ``transformers``' ``BigBirdBlockSparseAttention`` (block 64, 3 random
  blocks), likewise with projections, against ``attnkit_proj+bigbird``.

Before timing, each sparse kernel's output at lengths up to 16k is compared with SDPA given
the kernel's own dense boolean mask; the max abs difference goes into the JSON
(``max_abs_err_vs_dense_mask``; 1e-3 to 8e-3 in bf16 on an H100), with FlexAttention's
``BlockMask.sparsity()`` (``flex_sparsity_pct``). ``--extra`` runs a second set of rows:
the chunked path on the GPU for the patterns whose tiles are all partial, causal rows, routing.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import attnkit.attention as A  # noqa: E402
from attnkit.attention.benchmark import KERNELS, VARIANTS  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

warnings.filterwarnings("ignore", category=UserWarning)
for _name in ("recompile_limit", "cache_size_limit"):  # one compiled FlexAttention per pattern and shape
    if hasattr(torch._dynamo.config, _name):
        setattr(torch._dynamo.config, _name, 256)

B, H, D = 1, 12, 64
# (row, length) in the order they run: the targets first, so that a run cut short
# still has them.
FULL = [
    *[(n, 16384) for n in ("dense", "sliding_window", "hf_longformer", "attnkit_proj+sliding_window")],
    *[(n, t) for t in (65536, 32768) for n in ("dense", "sliding_window")],
    *[(n, 4096) for n in ("dense", "bigbird", "hf_bigbird", "attnkit_proj+bigbird", "linear", "lsh")],
    *[(n, t) for t in (16384, 65536) for n in ("linear", "lsh")],
    *[(n, 16384) for n in ("bigbird", "dilated_window", "global_window", "strided", "fixed")],
    *[(n, t) for t in (1024, 4096) for n in ("dense", "sliding_window", "linear")],
    ("linear", 32768), ("lsh", 1024), ("hf_longformer", 4096), ("attnkit_proj+sliding_window", 4096),
]
# Second run: alternatives on the GPU (the chunked path instead of FlexAttention for the
# patterns whose blocks are all partial in natural order), causal linear, routing.
EXTRA = [
    *[(n, 16384) for n in ("dense", "strided", "strided@chunked", "fixed", "fixed@chunked", "global_window",
                           "global_window@chunked", "dilated_window@chunked", "routing", "linear@causal", "dense@causal")],
    *[(n, 4096) for n in ("dense", "routing", "bigbird", "linear")],
    *[(n, 65536) for n in ("routing", "linear@causal", "dense@causal")],
]
QUICK = [(n, t) for t in (256, 1024) for n in ("dense", "sliding_window", "linear", "lsh", "routing", "bigbird", "strided",
                                               "fixed", "dilated_window", "global_window", "strided@chunked", "linear@causal")]




def kernel_fn(name: str, device: torch.device | None = None) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``name`` from ``KERNELS``, optionally with ``@causal``, ``@chunked`` (the chunked backend)
    ``@kv64`` / ``@t64`` (bigbird's FlexAttention tiles of 128 x 64 / 64 x 64), ``@cg`` (bigbird or
    linear with ``cuda_graphs=True``: forward and backward replayed as captured CUDA graphs),
    ``@t64cg`` (both) or ``@generic`` (eager non-causal linear on the generic path instead of its
    autograd Function)."""
    base, _, variant = name.partition("@")
    kind, params = KERNELS[base]
    causal = variant == "causal"
    params = {**params, **VARIANTS.get(variant, {})}
    if kind == "sdpa":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    kernel = A.build(kind, head_dim=D, n_heads=H, params=params).to(device)
    return lambda q, k, v: kernel(q, k, v, causal=causal)


def check_against_mask(name: str, q: Tensor, k: Tensor, v: Tensor) -> float:
    """Max abs difference between the kernel and SDPA with the kernel's dense boolean mask."""
    base, _, variant = name.partition("@")
    kind, params = KERNELS[base]
    kernel = A.get(kind, **params, **VARIANTS.get(variant, {}))
    with torch.no_grad():
        out = kernel(q, k, v)
        allowed = kernel.pattern(False).dense(q.shape[-2], k.shape[-2], q.device)
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return float((out.float() - want.float()).abs().max())


def flex_sparsity(name: str, t: int, device: torch.device) -> float | None:
    """Percent of FlexAttention tiles the block mask skips (``BlockMask.sparsity``), or None off CUDA."""
    base, _, variant = name.partition("@")
    if device.type != "cuda" or variant == "causal" or VARIANTS.get(variant, {}).get("backend") == "chunked":
        return None
    from attnkit.attention import flex

    kind, params = KERNELS[base]
    kernel = A.get(kind, **params)
    tiles = VARIANTS.get(variant, {}).get("flex_tiles")
    return float(flex.block_mask(kernel.pattern(False), ("sparsity", name), t, t, device, tiles).sparsity())


class WithProjection(nn.Module):
    """One fused q/k/v projection then an attnkit kernel: the work HF's self-attention modules do."""

    def __init__(self, name: str, device: torch.device) -> None:
        super().__init__()
        self.qkv = nn.Linear(H * D, 3 * H * D)
        self.fn = kernel_fn(name, device)

    def forward(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        q, k, v = (y.view(b, t, H, D).transpose(1, 2) for y in self.qkv(x).chunk(3, dim=-1))  # 3 x (B, H, T, D)
        return self.fn(q, k, v)


def hf_longformer(device: torch.device, dtype: torch.dtype, t: int) -> Callable[[Tensor], Tensor]:
    from transformers import LongformerConfig
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

    cfg = LongformerConfig(hidden_size=H * D, num_attention_heads=H, attention_window=[512], attention_probs_dropout_prob=0.0)
    mod = LongformerSelfAttention(cfg, layer_id=0).to(device, dtype)
    mask = torch.zeros(B, t, device=device, dtype=dtype)  # 0 = local attention everywhere
    no = torch.zeros(B, t, device=device, dtype=torch.bool)
    return lambda x: mod(x, attention_mask=mask, is_index_masked=no, is_index_global_attn=no, is_global_attn=False)[0]


def hf_bigbird(device: torch.device, dtype: torch.dtype, t: int) -> Callable[[Tensor], Tensor]:
    from transformers import BigBirdConfig, BigBirdModel
    from transformers.models.big_bird.modeling_big_bird import BigBirdBlockSparseAttention

    cfg = BigBirdConfig(hidden_size=H * D, num_attention_heads=H, block_size=64, num_random_blocks=3,
                        attention_type="block_sparse", max_position_embeddings=max(4096, t), attention_probs_dropout_prob=0.0)
    mod = BigBirdBlockSparseAttention(cfg, seed=0).to(device, dtype).eval()
    blocked, band, from_mask, to_mask = BigBirdModel.create_masks_for_block_sparse_attn(torch.ones(B, t, device=device, dtype=dtype), 64)
    return lambda x: mod(x, band_mask=band, from_mask=from_mask, to_mask=to_mask, from_blocked_mask=blocked, to_blocked_mask=blocked)[0]


def make_step(name: str, t: int, device: torch.device, dtype: torch.dtype) -> tuple[Callable[[int], None], dict[str, Any]]:
    gen = torch.Generator(device=device).manual_seed(t)
    info: dict[str, Any] = {}
    if name.startswith("hf_") or name.startswith("attnkit_proj+"):
        x = torch.randn(B, t, H * D, generator=gen, device=device, dtype=dtype, requires_grad=True)
        if name == "hf_longformer":
            fn = hf_longformer(device, dtype, t)
        elif name == "hf_bigbird":
            fn = hf_bigbird(device, dtype, t)
        else:
            fn = WithProjection(name.split("+", 1)[1], device).to(device, dtype)
        out0 = fn(x)
        grad = torch.randn_like(out0)
        del out0

        def step(_i: int) -> None:
            fn(x).backward(grad)
            x.grad = None
            for p in getattr(fn, "parameters", lambda: [])():
                p.grad = None

        return step, info
    q, k, v = (torch.randn(B, H, t, D, generator=gen, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    if name.partition("@")[0] not in ("dense", "linear", "lsh", "routing") and t <= 16384:
        info["max_abs_err_vs_dense_mask"] = check_against_mask(name, q, k, v)
        info["flex_sparsity_pct"] = flex_sparsity(name, t, device)
    if name == "lsh" and device.type == "cuda" and t <= 16384:  # the FlexAttention path against the chunked one
        kind, params = KERNELS["lsh"]
        with torch.no_grad():
            fast, slow = (A.get(kind, **params, backend=bk)(q, k, v) for bk in ("flex", "chunked"))
        info["max_abs_err_vs_chunked"] = float((fast.float() - slow.float()).abs().max())
    fn = kernel_fn(name, device)
    grad = torch.randn(B, H, t, D, generator=gen, device=device, dtype=dtype)

    def step(_i: int) -> None:
        fn(q, k, v).backward(grad)
        q.grad = k.grad = v.grad = None

    return step, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    ap.add_argument("--only", nargs="+", default=None, help="only these rows")
    ap.add_argument("--extra", action="store_true", help="the second set of rows (GPU alternatives, causal, routing)")
    ap.add_argument("--rows", nargs="+", default=None, metavar="NAME:LENGTH",
                    help="exactly these rows, e.g. dense:4096 lsh:16384 bigbird@kv64:4096 (instead of a plan)")
    ap.add_argument("--suffix", default=None, help="suffix of the JSON file name")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args()
    device = common.pick_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    plan = QUICK if args.quick or device.type != "cuda" else EXTRA if args.extra else FULL
    if args.only:
        plan = [(n, t) for n, t in plan if n in args.only]
    if args.rows:
        plan = [(r.rsplit(":", 1)[0], int(r.rsplit(":", 1)[1])) for r in args.rows]
    suffix = args.suffix if args.suffix is not None else "-extra" if args.extra else ""
    warmup, iters, rounds = (3, 5, 2) if device.type == "cuda" else (1, 2, 1)
    env = common.environment(device)
    results: list[dict[str, Any]] = []
    payload = {"environment": env, "shapes": {"batch": B, "heads": H, "head_dim": D, "dtype": str(dtype)}, "results": results}
    for name, t in plan:
        row: dict[str, Any] = {"name": name, "length": t}
        try:
            step, info = make_step(name, t, device, dtype)
            row.update(info)
            timing = common.time_interleaved({name: step}, device, warmup=warmup, iters=iters, rounds=rounds)[name]
            row["timing"] = timing.to_dict()
            row["median_ms"] = timing.median_ms
            row["peak_bytes"] = common.step_peak_memory(step, device)
        except Exception as e:  # noqa: BLE001  (an out-of-memory or an HF API change is recorded, not fatal)
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        step = None  # free its tensors before the next row
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results.append(row)
        peak = row.get("peak_bytes")
        print(f"{name:<30}{t:>7}  {row.get('median_ms', float('nan')):9.3f} ms  "
              f"{(peak or 0) / 2**20:9.0f} MiB  {row.get('max_abs_err_vs_dense_mask', row.get('max_abs_err_vs_chunked', ''))} {row.get('error', '')}", flush=True)
        common.write_json("attention", payload, args.out_dir, suffix=suffix)
    print(summary(results))
    print("wrote", common.write_json("attention", payload, args.out_dir, suffix=suffix))


def summary(results: list[dict[str, Any]]) -> str:
    """The Markdown table: each row's time and peak memory, and the speed-up over dense SDPA."""
    dense = {(r["length"], r["name"]): r["median_ms"] for r in results if r["name"].startswith("dense") and "median_ms" in r}
    rows = []
    for r in sorted(results, key=lambda r: (r["length"], r["name"] != "dense")):
        if "median_ms" not in r:
            rows.append([r["name"], str(r["length"]), "-", "-", "-", r.get("error", ""), ""])
            continue
        ref = (r["length"], "dense@causal" if r["name"].endswith("@causal") else "dense")
        ratio = f"{dense[ref] / r['median_ms']:.2f}x" if ref in dense else "-"
        mem = f"{r['peak_bytes'] / 2**20:.0f}" if r.get("peak_bytes") is not None else "-"
        sparsity = r.get("flex_sparsity_pct")
        rows.append([r["name"], str(r["length"]), f"{r['median_ms']:.3f}", mem, ratio, str(r.get("max_abs_err_vs_dense_mask", "")),
                     "" if sparsity is None else f"{sparsity:.1f}"])
    return common.markdown_table(["kernel", "T", "fwd+bwd ms", "peak MiB", "dense / this", "max err vs mask", "flex tiles skipped %"], rows)


if __name__ == "__main__":
    main()
