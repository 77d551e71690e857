"""The embedded eval on Ray workers against one process (issue: past one machine).

Runs the same ``saffron eval`` twice on the embedded world (``smol-aligned``, smol-guard,
smol-mrm; held-out AdvBench prompts, 10-token prefill): once in one process with ``--threads``
torch threads, once with ``--ray local --ray-workers W`` (one thread each), and reports each
run's wall time, its steady throughput (records per second between the first and the last
record, read by polling ``records.jsonl``: model loading and the Ray start excluded), the
ratios, and whether the two runs wrote the same records (wall times aside).

Usage: ``python bench/ray_eval.py [--limit 6] [--workers 2] [--out /tmp/ray-bench]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

Row = dict[str, Any]


def watched(cmd: list[str], records: Path) -> Row:
    """Run ``cmd``, polling ``records`` for the times its first and last lines appeared."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen, first, last = 0, None, None
    while proc.poll() is None:
        time.sleep(0.25)
        n = len(records.read_text().splitlines()) if records.is_file() else 0
        if n > seen:
            now = time.perf_counter() - t0
            first = now if first is None else first
            seen, last = n, now
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err.strip()[-500:]}")
    n = len(records.read_text().splitlines())
    steady = (n - 1) / (last - first) if first is not None and last and last > first else None
    return {"records": n, "wall_s": wall, "first_s": first, "steady_rec_s": steady}


def stable(path: Path) -> list[Row]:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    for r in rows:
        r.pop("wall_s")
        r["compute"].pop("wall_s", None)
    return sorted(rows, key=lambda r: (r["prompt_id"], r["method"], r["budget"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--limit", type=int, default=6, help="prompts")
    ap.add_argument("--methods", default="greedy,best-of-n,saffron")
    ap.add_argument("--budgets", default="4")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the one process")
    ap.add_argument("--out", default="/tmp/ray-bench")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    base = [sys.executable, "-m", "saffron", "eval", "--dataset", "advbench", "--methods",
            args.methods, "--budgets", args.budgets, "--limit", str(args.limit)]  # fmt: skip
    one = watched([*base, "--threads", str(args.threads), "--out", str(out / "one")],
                  out / "one" / "records.jsonl")  # fmt: skip
    ray = watched([*base, "--ray", "local", "--ray-workers", str(args.workers), "--ray-cpus", "1",
                   "--out", str(out / "ray")], out / "ray" / "records.jsonl")  # fmt: skip
    a, b = stable(out / "one" / "records.jsonl"), stable(out / "ray" / "records.jsonl")
    texts = [[(r["prompt_id"], r["method"], r["budget"], r["text"]) for r in x] for x in (a, b)]
    print("```\npython " + " ".join(sys.argv) + "\n```\n")
    print("| run | records | wall s | first record s | steady records/s |")
    print("|---|---|---|---|---|")
    for name, r in ((f"one process, {args.threads} threads", one),
                    (f"--ray local, {args.workers} workers × 1 CPU", ray)):  # fmt: skip
        steady = f"{r['steady_rec_s']:.3f}" if r["steady_rec_s"] else "–"
        print(f"| {name} | {r['records']} | {r['wall_s']:.0f} | {r['first_s']:.0f} | {steady} |")
    ratio = ray["steady_rec_s"] / one["steady_rec_s"] if one["steady_rec_s"] else float("nan")
    print(f"\nRay / one process: steady throughput × {ratio:.2f}, wall time × "
          f"{ray['wall_s'] / one['wall_s']:.2f}; same texts: {texts[0] == texts[1]}; same "
          f"records (wall times aside): {a == b}")  # fmt: skip


if __name__ == "__main__":
    main()
