"""``attnkit demo``: train a small encoder-decoder Transformer from scratch on a CPU.

The task is generated in-process: reverse a random string of 3-10 digits. The model is a
2+2-layer Transformer (d_model = 64) trained with the paper's optimizer and regulariser
(Adam with beta2 = 0.98 and eps = 1e-9, label smoothing 0.1) and a linear warm-up with
cosine decay to zero over at most 1,200 steps (``attnkit train`` uses the Noam schedule).
Training stops once all validation strings come out right. Held-out strings never appear
in training; the demo prints some of them with the model's greedy decodings and the
exact-match rate, and saves the checkpoint and the loss curve under ``--out``. Time and
accuracy per seed: ``benchmarks/demo.py``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

DEMO_MODEL = dict(d_model=64, n_heads=4, d_ff=128, n_encoder_layers=2, n_decoder_layers=2, dropout=0.0, max_len=64)
DEMO_TRAIN = dict(steps=1200, batch_size=64, warmup=100, lr=3e-3, schedule="cosine", eval_every=100, metric="exact_match", metric_mode="max", stop_at=1.0, log_every=10, clip_norm=1.0)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("demo", help="train a tiny Transformer to reverse digit strings (about a minute on CPU)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=["reverse", "sort", "copy"], default="reverse", help="the transduction task (default: reverse)")
    p.add_argument("--out", type=Path, default=Path("attnkit-demo"), help="where to save the model and loss plot (default: ./attnkit-demo)")
    p.add_argument("--steps", type=int, default=DEMO_TRAIN["steps"], help="maximum training steps (stops earlier at 100%% validation exact match)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from attnkit.data.seq2seq import PairDataset
    from attnkit.data.synthetic import synthetic_task
    from attnkit.errors import ConfigError
    from attnkit.models.transformer import Transformer, TransformerConfig
    from attnkit.training import Seq2SeqTask, TrainConfig, Trainer, pick_device, translate_strings

    if args.steps < 1:
        raise ConfigError(f"--steps={args.steps} must be >= 1")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    if args.device == "cpu":
        torch.set_num_threads(1)  # the configuration benchmarks/demo.py times
    train, test_in, test_out, tok = synthetic_task(args.task, n_train=20000, n_valid=700, seed=args.seed)
    valid_in, valid_out = test_in[:200], test_out[:200]  # for evaluation during training
    test_in, test_out = test_in[200:], test_out[200:]  # never seen before the final report
    vocab = tok.get_vocab_size()
    model = Transformer(TransformerConfig(src_vocab_size=vocab, tgt_vocab_size=vocab, **DEMO_MODEL))
    device = pick_device(args.device)
    cfg = TrainConfig(**{**DEMO_TRAIN, "steps": args.steps, "warmup": min(DEMO_TRAIN["warmup"], args.steps // 2), "seed": args.seed, "device": str(device)})
    task = Seq2SeqTask(
        train,
        batch_size=cfg.batch_size,
        label_smoothing=cfg.label_smoothing,
        valid=PairDataset([(tok.encode(a).ids, tok.encode(b).ids) for a, b in zip(valid_in, valid_out)], name="validation set"),
        heldout=(valid_in, valid_out),
        tokenizer=tok,
        device=device,
    )
    n_params = sum(p.numel() for p in model.parameters())
    print(f"attnkit demo: {args.task} digit strings, {len(train):,} training pairs, {n_params:,}-parameter Transformer on {device}")
    result = Trainer(model, task, cfg, args.out, tokenizer=tok, progress=not args.no_progress).fit()
    preds = translate_strings(model, tok, test_in, device=device, batch_size=256)
    exact = sum(p == a for p, a in zip(preds, test_out)) / len(test_out)
    print(f"trained {result.step} steps in {result.seconds:.1f}s (best validation exact match {result.best} at step {result.best_step})")
    print(f"{'input':<12} {'expected':<12} {'model':<12}")
    for s, a, p in list(zip(test_in, test_out, preds))[:8]:
        print(f"{s:<12} {a:<12} {p:<12} {'ok' if a == p else 'WRONG'}")
    print(f"saved model to {args.out / 'model'} and loss curve to {args.out / 'loss.png'} ({time.perf_counter() - start:.0f}s total)")
    print(f"held-out exact match: {exact:.3f}")
    return 0
