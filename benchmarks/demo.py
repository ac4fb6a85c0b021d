"""`attnkit demo` (the ``demo`` recipe) as a user runs it: wall time and held-out exact match, one process per seed.

Each seed runs ``attnkit demo --no-progress --seed S`` as a subprocess (so Python start-up and
imports are counted); the command trains the ``demo`` recipe (``attnkit train reverse --recipe
demo``). The final ``held-out exact match: X`` line and the validation evaluations from
``metrics.jsonl`` are read back. The JSON goes to ``benchmarks/results/demo-<device>-<date>.json``.

    python benchmarks/demo.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402


def run_seed(seed: int, work: Path) -> dict:
    out = work / f"seed{seed}"
    start = time.perf_counter()
    p = subprocess.run(
        [*common.attnkit_command(), "demo", "--no-progress", "--seed", str(seed), "--out", str(out)],
        capture_output=True, text=True, check=True, env=common.attnkit_env(),
    )
    wall = time.perf_counter() - start
    exact = float(p.stdout.strip().splitlines()[-1].split(": ")[1])
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval/exact_match" in line]
    return {
        "seed": seed,
        "wall_s": wall,
        "heldout_exact_match": exact,
        "steps": evals[-1]["step"] if evals else None,
        "validation_exact_match": [(e["step"], e["eval/exact_match"]) for e in evals],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_seed(s, Path(tmp)) for s in args.seeds]
    payload = {"benchmark": "demo", "recipe": "demo", "environment": common.environment(device), "cpu_count": __import__("os").cpu_count(), "runs": runs}
    path = common.write_json("demo", payload, args.out_dir)
    print(common.markdown_table(
        ["seed", "wall s", "steps", "held-out exact match"],
        [[str(r["seed"]), f"{r['wall_s']:.1f}", str(r["steps"]), f"{r['heldout_exact_match']:.3f}"] for r in runs],
    ))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
