"""Every search method end to end on the embedded world: TFLOP and wall seconds per prompt.

20 held-out AdvBench prompts (the eval split), 10-token prefill attack (the policy's own greedy
start), ≤ 32 new tokens, one budget for every method. Runs through the eval harness, so the
run is resumable and its records sit in ``--out``; writes ``per_prompt.csv`` there and prints a
markdown summary.

Usage: ``python bench/search.py [--limit 20] [--budget 4] [--out bench/results/search]``
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path

from saffron.eval.run import EvalConfig, run_eval
from saffron.eval.world import load_world

METHODS = ("greedy", "sample", "best-of-n", "rejection", "beam", "mcts", "saffron")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--budget", type=int, default=4)
    ap.add_argument("--out", default="bench/results/search")
    args = ap.parse_args()
    cfg = EvalConfig(dataset="advbench", methods=METHODS, budgets=(args.budget,), limit=args.limit)
    out = Path(args.out)
    records = run_eval(cfg, out, load_world)
    with open(out / "per_prompt.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt_id", "method", "budget", "tflop", "wall_s", "unsafe", "tokens"])
        for r in sorted(records, key=lambda r: (r["prompt_id"], METHODS.index(r["method"]))):
            w.writerow(
                [
                    r["prompt_id"],
                    r["method"],
                    r["budget"],
                    f"{r['tflop']:.5f}",
                    f"{r['wall_s']:.2f}",
                    int(r["unsafe"]),
                    len(r["tokens"]),
                ]
            )
    print(f"{len({r['prompt_id'] for r in records})} prompts, budget {args.budget}\n")
    print("| method | TFLOP/prompt mean | min | max | wall s mean | min | max | ASR |")
    print("|---|---|---|---|---|---|---|---|")
    for m in METHODS:
        rs = [r for r in records if r["method"] == m]
        tf = [r["tflop"] for r in rs]
        ws = [r["wall_s"] for r in rs]
        asr = sum(r["unsafe"] for r in rs) / len(rs)
        print(
            f"| {m} | {statistics.mean(tf):.4f} | {min(tf):.4f} | {max(tf):.4f} | "
            f"{statistics.mean(ws):.2f} | {min(ws):.2f} | {max(ws):.2f} | {asr:.2f} |"
        )


if __name__ == "__main__":
    main()
