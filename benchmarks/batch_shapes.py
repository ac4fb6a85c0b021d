"""How many batch shapes the Multi30k recipe's training run meets: the number of CUDA graphs that
``train.cuda_graphs`` records for it (one per shape, :mod:`attnkit.training.graphs`).

The recipe's tokenizer is learned from the training split as ``train_translation`` does, the
pairs are cut into the recipe's token-count batches epoch after epoch (the plan's seed and epoch
as the Trainer passes them), and every ``(rows, source length, target length)`` of the first
``train.steps`` batches is counted. CPU only, about a minute.

    python benchmarks/batch_shapes.py --data .data/multi30k
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import translate  # noqa: E402  (the recipe)

from attnkit.data.parallel import TokenBatches  # noqa: E402
from attnkit.data.subword import train_subword_tokenizer  # noqa: E402
from attnkit.training.translation import encode_pairs  # noqa: E402

try:
    from benchmarks import common  # noqa: E402
except ImportError:
    import common  # type: ignore[no-redef]  # noqa: E402


def count_shapes(batches: TokenBatches, steps: int, seed: int) -> tuple[collections.Counter, int]:
    """Shapes ``(B, Ts, Tt)`` of the first ``steps`` batches (``Tt`` counts BOS/EOS), and the epochs they span."""
    shapes: collections.Counter = collections.Counter()
    seen, epoch = 0, 0
    while seen < steps:
        for idx in batches.plan(epoch=epoch, seed=seed):
            if seen == steps:
                break
            pairs = [batches.pairs[i] for i in idx]
            shapes[(len(idx), max(len(s) for s, _ in pairs), max(len(t) for _, t in pairs) + 1)] += 1
            seen += 1
        epoch += 1
    return shapes, epoch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(".data/multi30k"), help="Multi30k directory (default .data/multi30k)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default benchmarks/results)")
    args = ap.parse_args(argv)
    model_cfg, train_cfg = translate.RECIPE["model"], translate.RECIPE["train"]
    data_cfg = translate.RECIPE["data"].replace(data=str(args.data))
    train = data_cfg.read(data_cfg.train_split, limit=data_cfg.max_pairs)
    tok = train_subword_tokenizer(train.src + train.tgt, data_cfg.vocab_size, data_cfg.tokenizer)
    batches = TokenBatches(encode_pairs(tok, train, model_cfg.max_len), data_cfg.max_tokens)
    shapes, epochs = count_shapes(batches, train_cfg.steps, train_cfg.seed)
    print(f"{train_cfg.steps} steps over {epochs} epochs ({len(batches.plan(epoch=0, seed=train_cfg.seed))} batches an epoch): "
          f"{len(shapes)} distinct batch shapes")
    payload = {
        "benchmark": "batch-shapes", "environment": common.environment(torch.device("cpu")), "steps": train_cfg.steps,
        "epochs": epochs, "distinct_shapes": len(shapes), "max_tokens": data_cfg.max_tokens,
        "shapes": [{"rows": b, "source_len": s, "target_len": t, "batches": n} for (b, s, t), n in sorted(shapes.items())],
    }
    print(f"wrote {common.write_json('batch-shapes', payload, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
