"""Host time of encoder-decoder decoding: greedy and beam search over the Multi30k recipe's model.

    python benchmarks/seq2seq_decode.py                    # CUDA if present: bf16 autocast
    python benchmarks/seq2seq_decode.py --device cpu --small

The model has random weights, so no hypothesis ends early: every variant decodes exactly
``--steps`` tokens per sentence, and two commits decode the same amount of work. This isolates
what a decoding step costs on the host. The recipe's step sizes are small (batches of 128
sentences, one new token each), so on a GPU that cost is most of the step.
``translate.py`` measures the trained model's decoding, where sentences end at their EOS.

Sentences: ``--sentences`` random source rows, with lengths drawn from 8-30 tokens, right-padded,
in batches of ``--batch`` (the batch ``translate.py`` decodes with). Each variant runs once to
warm up, then ``--repeats`` times; the JSON keeps every time and reports sentences/s from the
median.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

import attnkit  # noqa: E402
from attnkit.generation import beam_search, greedy_decode  # noqa: E402
from attnkit.models.transformer import TransformerConfig  # noqa: E402

RECIPE = TransformerConfig(  # benchmarks/translate.py's model (vocabulary 8,000, 3 + 3 layers, d=512)
    src_vocab_size=8000, tgt_vocab_size=8000, d_model=512, n_heads=8, d_ff=2048, n_encoder_layers=3,
    n_decoder_layers=3, dropout=0.3, max_len=256,
)
SMALL = dict(src_vocab_size=500, tgt_vocab_size=500, d_model=32, n_heads=4, d_ff=64)


def batches(n: int, size: int, vocab: int, pad: int, device: torch.device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(8, 31, (n,), generator=g)
    out = []
    for start in range(0, n, size):
        ls = lengths[start : start + size]
        src = torch.randint(3, vocab, (len(ls), int(ls.max())), generator=g)
        src[torch.arange(src.shape[1])[None, :] >= ls[:, None]] = pad  # right padding
        out.append(src.to(device))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--small", action="store_true", help="a tiny model (d=32): host time only, also on a CPU")
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30, help="tokens decoded per sentence (default 30)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg = dataclasses.replace(RECIPE, **SMALL) if args.small else RECIPE
    torch.manual_seed(0)
    model = attnkit.Transformer(cfg).to(device).eval()
    # the EOS logit pushed down: random weights must not end a hypothesis early
    with torch.no_grad():
        model.lm_head.weight[cfg.eos_id].zero_()
    data = batches(args.sentences, args.batch, cfg.src_vocab_size, cfg.pad_id, device)
    variants = {
        "greedy kv-cache": lambda src: greedy_decode(model, src, max_len=args.steps),
        "beam4 kv-cache": lambda src: beam_search(model, src, beam_size=4, max_len=args.steps),
        "beam4 no-cache": lambda src: beam_search(model, src, beam_size=4, max_len=args.steps, use_cache=False),
    }
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    results: dict[str, Any] = {}
    for name, fn in variants.items():
        times = []
        with torch.no_grad(), amp:
            for r in range(args.repeats + 1):
                common.synchronize(device)
                t0 = time.perf_counter()
                lengths = [fn(src).shape[1] for src in data]
                common.synchronize(device)
                if r:  # the first pass warms up (kernel choice per shape)
                    times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        results[name] = {"seconds": times, "sentences_per_s": args.sentences / med, "output_lengths": sorted(set(lengths))}
        print(f"{name}: {args.sentences / med:,.0f} sentences/s (median of {args.repeats}: {med * 1e3:.1f} ms)", flush=True)
    payload = {"benchmark": "seq2seq-decode", "environment": common.environment(device), "model": cfg.to_dict(),
               "sentences": args.sentences, "batch": args.batch, "steps": args.steps, "results": results,
               "method": "random weights with the EOS row of the output layer zeroed; every sentence decodes --steps tokens"}
    suffix = ("-small" if args.small else "") + (f"-{args.tag}" if args.tag else "")
    print(f"wrote {common.write_json('seq2seq-decode', payload, args.out_dir, suffix=suffix)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
