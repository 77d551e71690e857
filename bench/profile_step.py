"""Where one Saffron step spends its time: a ``torch.profiler`` breakdown for BENCHMARKS.md.

Runs Saffron (N = ``--width``) on one held-out AdvBench prompt with a 10-token prefill through
the scheduler for ``--warm`` steps (so the pool holds prompt and beams, as mid-search), then
profiles the next ``--steps`` steps (one policy call and one MRM call each) and prints the
operators by self CPU time as a markdown table, with the exact command. ``--tiny`` smoke-runs
it on the tiny random model.

Usage: ``PYTHONPATH=src:bench python bench/profile_step.py [--width 16] [--warm 8] [--steps 3]``
"""

from __future__ import annotations

import argparse
import sys

import torch
from speed import embedded_world, prompts, tiny_world
from torch.profiler import ProfilerActivity, profile, record_function

from saffron.search import SearchConfig
from saffron.search.scheduler import Scheduler


def table(prof: profile, rows: int) -> str:
    """Operators by self CPU time: markdown rows (name, calls, self ms, share)."""
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    lines = ["| operator | calls | self ms | share |", "|---|---|---|---|"]
    for e in events[:rows]:
        ms = e.self_cpu_time_total / 1e3
        lines.append(f"| `{e.key}` | {e.count} | {ms:.1f} | {e.self_cpu_time_total / total:.1%} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--warm", type=int, default=8, help="steps run before profiling")
    ap.add_argument("--steps", type=int, default=3, help="steps profiled")
    ap.add_argument("--rows", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policy", default="smol-aligned")
    ap.add_argument("--mrm", default="smol-mrm")
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    world = tiny_world() if args.tiny else embedded_world(args.policy, args.mrm)
    (seq,) = prompts(world, 1)
    cfg = SearchConfig(
        budget=args.width, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens
    )
    sched = Scheduler(world, max_searches=1)
    sched.submit(0, "saffron", seq, cfg)
    for _ in range(args.warm):
        sched.step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(args.steps):
            with record_function("saffron step"):
                sched.step()
    print("```\npython " + " ".join(sys.argv) + "\n```\n")
    print(f"{args.steps} steps of Saffron N={args.width}, after {args.warm} warm steps.\n")
    print(table(prof, args.rows))


if __name__ == "__main__":
    main()
