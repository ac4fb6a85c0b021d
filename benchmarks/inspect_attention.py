"""The cost of seeing attention: attnkit.inspect against the reference path and Hugging Face's eager attentions.

Run from the repository root:

    python benchmarks/inspect_attention.py                        # CUDA: BERT-base shapes at 512 tokens, a long GPT
    python benchmarks/inspect_attention.py --quick --device cpu   # tiny sizes: a smoke test

Two models, random weights, batch ``--batch``:

* ``bert``: BERT-base shapes (12 layers, d_model 768, 12 heads) at ``--length`` tokens. Rows:
  ``forward`` (attnkit's ordinary pass: SDPA), ``inspect_all`` (:func:`attnkit.inspect.attentions`,
  every layer, head and row: the same pass plus the recomputed probabilities), ``inspect_cls``
  (only query row 0 of every layer: the [CLS] row), ``need_weights`` (the model's reference path,
  ``BertModel(..., need_weights=True)``), and Hugging Face's ``BertModel`` with the same weights:
  ``hf_sdpa`` (its fast pass, no attentions) and ``hf_eager_attentions`` (``attn_implementation="eager"``,
  ``output_attentions=True``: what bertviz needs). Before timing, inspect's probabilities are
  compared with Hugging Face's (``max_abs_vs_hf``).
* ``long``: a GPT of the same width with the ``sliding_window`` kernel (window 256) at
  ``--long-length`` positions. Rows: ``forward`` (FlexAttention on CUDA, the chunked path on the
  CPU), ``inspect_last_row`` (the last query row of every layer), ``need_weights`` (dense
  ``T x T`` weights per layer); ``max_abs_vs_need_weights`` compares the rows.

All rows run under ``torch.no_grad()`` in float32 (TF32 matmuls allowed on CUDA).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from attnkit.inspect import attentions  # noqa: E402
from attnkit.models import GPT, BertModel  # noqa: E402
from attnkit.models.bert import BertConfig  # noqa: E402
from attnkit.models.gpt import GPTConfig  # noqa: E402
from attnkit.models.transformer import AttentionConfig  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

Step = Callable[[int], None]


def bert_case(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Step], dict[str, Any]]:
    from transformers import BertModel as HFBert

    from attnkit.hub.bert import save_hf_bert

    torch.manual_seed(0)
    cfg = BertConfig(d_model=args.d_model, n_heads=args.heads, n_layers=args.layers, vocab_size=args.vocab,
                     max_positions=max(512, args.length), attention=AttentionConfig(dropout=0.0), dropout=0.0)
    model = BertModel(cfg).to(device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_hf_bert(model, tmp)
        hf_eager = HFBert.from_pretrained(tmp, attn_implementation="eager", add_pooling_layer=cfg.pooler).to(device).eval()
        hf_sdpa = HFBert.from_pretrained(tmp, attn_implementation="sdpa", add_pooling_layer=cfg.pooler).to(device).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, args.vocab, (args.batch, args.length), generator=g).to(device)
    keep = torch.ones_like(ids)
    keep[0, args.length * 3 // 4 :] = 0  # one padded row
    with torch.no_grad():
        mine = attentions(model, ids, attention_mask=keep)["self"]
        theirs = hf_eager(ids, attention_mask=keep, output_attentions=True).attentions
    err = max(float((a - b).abs().max()) for a, b in zip(mine, theirs))
    steps: dict[str, Step] = {
        "forward": lambda i: model(ids, attention_mask=keep),
        "inspect_all": lambda i: attentions(model, ids, attention_mask=keep),
        "inspect_cls": lambda i: attentions(model, ids, attention_mask=keep, rows=[0]),
        "need_weights": lambda i: model(ids, attention_mask=keep, need_weights=True),
        "hf_sdpa": lambda i: hf_sdpa(ids, attention_mask=keep),
        "hf_eager_attentions": lambda i: hf_eager(ids, attention_mask=keep, output_attentions=True),
    }
    return steps, {"max_abs_vs_hf": err, "length": args.length}


def long_case(args: argparse.Namespace, device: torch.device) -> tuple[dict[str, Step], dict[str, Any]]:
    torch.manual_seed(0)
    att = AttentionConfig(kind="sliding_window", params={"window": args.window})
    cfg = GPTConfig(vocab_size=args.vocab, context=args.long_length, d_model=args.d_model, n_heads=args.heads,
                    n_layers=args.layers, dropout=0.0, attention=att)
    model = GPT(cfg).to(device).eval()
    ids = torch.randint(5, args.vocab, (args.batch, args.long_length), generator=torch.Generator().manual_seed(2)).to(device)
    last = [args.long_length - 1]
    with torch.no_grad():
        rows = attentions(model, ids, rows=last)["self"]
        dense = model(ids, need_weights=True).attentions
    err = max(float((a - b[:, :, last]).abs().max()) for a, b in zip(rows, dense))
    del dense
    steps: dict[str, Step] = {
        "forward": lambda i: model(ids),
        "inspect_last_row": lambda i: attentions(model, ids, rows=last),
        "need_weights": lambda i: model(ids, need_weights=True),
    }
    return steps, {"max_abs_vs_need_weights": err, "length": args.long_length, "window": args.window}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    p.add_argument("--device", default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--long-length", type=int, default=8192)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--d-model", type=int, default=768)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out-dir", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.length, args.long_length, args.window = 2, 32, 128, 16
        args.layers, args.heads, args.d_model, args.vocab = 2, 2, 32, 128
        args.warmup, args.iters, args.rounds = 1, 2, 2
    device = common.pick_device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    result: dict[str, Any] = {"benchmark": "inspect-attention", "environment": common.environment(device),
                              "shape": {k: getattr(args, k) for k in ("batch", "layers", "heads", "d_model")}, "dtype": "float32"}
    for name, case in (("bert", bert_case), ("long", long_case)):
        steps, info = case(args, device)
        with torch.no_grad():
            timings = common.time_interleaved(steps, device, warmup=args.warmup, iters=args.iters, rounds=args.rounds)
        base = timings["forward"].median_ms
        rows = {}
        for row, t in timings.items():
            peak = common.step_peak_memory(lambda i, s=steps[row]: s(i), device)
            rows[row] = {"median_ms": round(t.median_ms, 3), "spread_ms": round(t.spread_ms, 3),
                         "x_forward": round(t.median_ms / base, 2), "peak_bytes": peak}
            print(f"{name:>4} {row:>20}: {t.median_ms:9.2f} ms  x{t.median_ms / base:.2f} of forward")
        result[name] = {**info, "rows": rows}
        print(f"{name:>4} {info}")
    path = common.write_json("inspect-attention" + ("-quick" if args.quick else ""), result,
                             Path(args.out_dir) if args.out_dir else None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
