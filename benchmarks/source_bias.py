"""What the shared source bias saves: ``attnkit.Transformer`` training steps with the source padding
as one score bias for every layer (``Transformer.source_bias``, the default) against a boolean
mask that each encoder and cross-attention layer converts and guards again.

    python benchmarks/source_bias.py                     # CUDA if present: the Multi30k recipe's model, bf16 autocast
    python benchmarks/source_bias.py --device cpu --small

Both variants run in one process on the same batch (right-padded sources, dropout on) and are
timed in alternating rounds (``benchmarks.common.time_interleaved``); the JSON goes to
``benchmarks/results/source-bias-<device>-<date>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import attnkit  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    ap.add_argument("--small", action="store_true", help="d_model 64, 3+3 layers, batch 8 x 20 tokens (host-bound)")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args()
    device = common.pick_device(args.device)
    torch.manual_seed(0)
    if args.small:
        cfg = attnkit.TransformerConfig(src_vocab_size=200, tgt_vocab_size=200, d_model=64, n_heads=4, d_ff=128,
                                        n_encoder_layers=3, n_decoder_layers=3, dropout=0.1, max_len=64)
        b, ts, tt = 8, 20, 18
    else:  # the Multi30k recipe's model (benchmarks/translate.py) on a batch of its size
        cfg = attnkit.TransformerConfig(src_vocab_size=8000, tgt_vocab_size=8000, d_model=512, n_heads=8, d_ff=2048,
                                        n_encoder_layers=3, n_decoder_layers=3, dropout=0.3, max_len=256)
        b, ts, tt = 256, 32, 30
    model = attnkit.Transformer(cfg).to(device).train()
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(3, cfg.src_vocab_size, (b, ts), generator=gen)
    src[::2, (3 * ts) // 4 :] = cfg.pad_id  # half the rows right-padded
    tgt = torch.randint(3, cfg.tgt_vocab_size, (b, tt), generator=gen)
    src, tgt = src.to(device), tgt.to(device)
    shared = model.source_bias
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step_with(use_bias: bool):
        def step(_i: int) -> None:
            model.source_bias = shared if use_bias else (lambda *a, **k: None)  # type: ignore[method-assign]
            with autocast:
                loss = model(src, tgt).logits.float().logsumexp(-1).mean()
            loss.backward()
            for p in model.parameters():
                p.grad = None
        return step

    warmup, iters, rounds = (5, 20, 4) if device.type == "cuda" else (3, 20, 4)
    timing = common.time_interleaved({"shared bias": step_with(True), "mask per layer": step_with(False)}, device,
                                     warmup=warmup, iters=iters, rounds=rounds)
    rows = {name: t.to_dict() for name, t in timing.items()}
    ratio = timing["mask per layer"].median_ms / timing["shared bias"].median_ms
    print(common.markdown_table(["variant", "median ms", "per-round medians"],
                                [[n, f"{t.median_ms:.3f}", ", ".join(f"{x:.2f}" for x in t.round_medians_ms)] for n, t in timing.items()]))
    print(f"mask per layer / shared bias: {ratio:.3f}")
    payload = {"environment": common.environment(device), "model": cfg.to_dict(), "batch": [b, ts, tt], "results": rows,
               "ratio_mask_over_bias": ratio}
    print("wrote", common.write_json("source-bias", payload, args.out_dir, suffix="-small" if args.small else ""))


if __name__ == "__main__":
    main()
