"""Operations the host dispatches: a training step of the Multi30k recipe's architecture (attnkit
against its ``torch.nn.Transformer`` twin) and greedy / beam decoding, counted on the CPU.

    python benchmarks/host_ops.py --out-dir benchmarks/results --tag NAME

Where a GPU step is short (the recipe's batches; one new token per decoding step), the host's
dispatching of operations is a large part of its time, and how many there are does not depend
on the device. The profiler counts top-level events: aten operations called from Python and
autograd nodes run by the backward (tiny dimensions, so that nothing but the count matters;
on the CPU SDPA's backward is several nodes where CUDA runs one). The numbers are exact and
repeatable, so two commits compare by running this file in each checkout (copy it into an
older one). Times are printed too, but on a shared CPU they are noise.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

import translate  # noqa: E402  (benchmarks/translate.py: the recipe, the twin, the step function)

import attnkit  # noqa: E402
from attnkit.data.seq2seq import Seq2SeqBatch  # noqa: E402
from attnkit.generation import beam_search, greedy_decode  # noqa: E402
from attnkit.models.transformer import AttentionConfig  # noqa: E402

TINY = dict(d_model=32, n_heads=4, d_ff=64, src_vocab_size=100, tgt_vocab_size=100)


def count(fn: Callable[[], Any]) -> int:
    """Top-level profiler events of one call of ``fn`` (after two warm-up calls)."""
    fn()
    fn()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(1 for e in prof.events() if e.cpu_parent is None)


def training(cfg: Any) -> dict[str, Any]:
    """Forward, and forward + backward, of each model on one padded batch; the step function of
    ``translate.py`` (loss, backward, gradient division, Adam) too."""
    torch.manual_seed(0)
    b, s, t = 8, 12, 10
    src = torch.randint(3, 100, (b, s))
    src[:2, -3:] = 0
    tgt = torch.randint(3, 100, (b, t + 1))
    tgt[:2, -2:] = 0
    batch = Seq2SeqBatch(src=src, tgt_in=tgt[:, :-1], tgt_out=tgt[:, 1:])
    models = {"attnkit": attnkit.Transformer(cfg), "torch.nn.Transformer": translate.TorchTranslator(cfg)}
    logits = {"attnkit": lambda m, b: m(b.src, b.tgt_in).logits, "torch.nn.Transformer": lambda m, b: m(b.src, b.tgt_in)}
    out: dict[str, Any] = {}
    for name, m in models.items():
        f = logits[name]
        step = translate.train_step_fn(m, f, [batch], 0.1, torch.device("cpu"))  # also puts m in training mode
        out[name] = {"forward": count(lambda: f(m, batch)), "forward_backward": count(lambda: f(m, batch).float().sum().backward()),
                     "train_step": count(lambda: step(0)), "parameters": len(list(m.parameters()))}
    return out


def decoding(cfg: Any) -> dict[str, Any]:
    """Greedy and beam search (4) of 16 sources of 20 tokens, 30 steps each: the EOS row of the
    output layer is zeroed, so no hypothesis ends early and every commit does the same steps."""
    torch.manual_seed(0)
    model = attnkit.Transformer(dataclasses.replace(cfg, dropout=0.0, attention=AttentionConfig())).eval()
    with torch.no_grad():
        model.lm_head.weight[cfg.eos_id].zero_()
    src = torch.randint(3, 100, (16, 20))
    src[::3, -5:] = 0
    runs = {
        "greedy kv-cache": lambda: greedy_decode(model, src, max_len=30),
        "beam4 kv-cache": lambda: beam_search(model, src, beam_size=4, max_len=30),
        "beam4 no-cache": lambda: beam_search(model, src, beam_size=4, max_len=30, use_cache=False),
    }
    with torch.no_grad():
        return {name: {"ops": count(fn), "output_length": int(fn().shape[1])} for name, fn in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--tag", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = dataclasses.replace(translate.RECIPE["model"], **TINY, attention=AttentionConfig(dropout=0.3), activation_dropout=0.3)
    payload = {"benchmark": "host-ops", "environment": common.environment(torch.device("cpu")), "model": cfg.to_dict(),
               "training": training(cfg), "decoding": decoding(cfg),
               "method": "top-level torch.profiler events of one call after two warm-up calls, on the CPU"}
    for name, r in payload["training"].items():
        print(f"{name:<22} forward {r['forward']:>5}  forward+backward {r['forward_backward']:>5}  train step {r['train_step']:>5}")
    for name, r in payload["decoding"].items():
        print(f"{name:<22} {r['ops']:>6} operations, {r['output_length']} tokens")
    suffix = f"-{args.tag}" if args.tag else ""
    print(f"wrote {common.write_json('host-ops', payload, args.out_dir, suffix=suffix)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
