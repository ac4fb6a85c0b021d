"""Print one table of every ``finetune-*.json`` in a folder (sweeps of ``benchmarks/finetune_sweep.sh``).

    python benchmarks/finetune_summary.py benchmarks/results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results")
    lines = ["| file | task | metric | value | target | wall s | options |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(folder.glob("finetune-*.json")):
        payload = json.loads(path.read_text())
        for r in payload["rows"]:
            opts = " ".join(a for a in r.get("command", "").split("--set")[3:]).strip()
            value = r.get("value")
            shown = r["metric"] if r.get("metric") == "TAPT only" else "failed" if value is None and "dev" not in r else (
                f"{100 * r['exact_match']:.2f} / {100 * value:.2f}" if r["task"] == "xquad" else f"{100 * value:.2f}")
            target = f"{100 * r['target']:.1f}" if r.get("target") else "-"
            lines.append(f"| {path.name} | {r['task']} | {r.get('metric', '-')} | {shown} | {target} | {r.get('wall_s', 0):.0f} | {opts} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
