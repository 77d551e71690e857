"""Where one Saffron step spends its time: a ``torch.profiler`` breakdown for BENCHMARKS.md.

Runs Saffron (N = ``--width``) through the scheduler with K searches in flight (``--in-flight``,
one held-out AdvBench prompt each, 10-token prefill) for ``--warm`` steps, so the pool holds
prompts and beams as mid-search, then profiles the next ``--steps`` steps (one policy call and
one MRM call each). For each K it prints:

* the step's time by region, each region's time net of the regions nested in it (the regions
  are labelled here by wrapping the library's functions, so the library carries no profiling
  code): the decoder's forward is model compute; everything else is what the issue calls
  waste (Python loops, KV gathers and copies, top-p, heads, scheduler and ledger bookkeeping);
* the decoder's own rate (positions it computed per second of its time) against the machine's
  batched-forward ceiling (``--ceiling-batch`` × 64 tokens, one forward), and the step's wall
  time without the profiler;
* the operators by self CPU time.

Usage: ``PYTHONPATH=src:bench python bench/profile_step.py [--width 16] [--in-flight 1 16]``;
``--tiny`` smoke-runs it on the tiny random model.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from speed import add_world_args, ceiling, clear, embedded_world, prompts, stems, tiny_world
from torch.profiler import ProfilerActivity, profile, record_function

import saffron.lm.backend as backend_mod
import saffron.reward.mrm as mrm_mod
import saffron.search.saffron as saffron_mod
from saffron.lm.ledger import Ledger
from saffron.search import SearchConfig, World
from saffron.search.scheduler import Scheduler

STEP = "step"
_role: list[str] = ["-"]  # the model role whose call is running (labels its nested regions)


def _wrapped(fn: Callable[..., Any], label: str, role: str | None = None) -> Callable[..., Any]:
    """``fn`` inside ``record_function``: ``label`` prefixed by the running role (or by
    ``role``, which it also makes the running role for what ``fn`` calls)."""

    @functools.wraps(fn)
    def inner(*args: Any, **kwargs: Any) -> Any:
        if role is not None:
            _role.append(role)
        name = f"{_role[-1]}: {label}" if label != STEP else label
        try:
            with record_function(name):
                return fn(*args, **kwargs)
        finally:
            if role is not None:
                _role.pop()

    return inner


@contextmanager
def labelled(world: World) -> Iterator[None]:
    """Wrap the functions of a step in labelled regions; undone on exit."""
    patches: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, attr: str, label: str, role: str | None = None) -> None:
        patches.append((owner, attr, owner.__dict__.get(attr)))
        setattr(owner, attr, _wrapped(getattr(owner, attr), label, role))

    patch(world.policy, "next_logits", "call", role="policy")
    assert world.mrm is not None
    for name in ("rewards", "reward_rows"):  # the whole vectors, or entries read as needed
        if hasattr(world.mrm, name):
            patch(world.mrm, name, "call (mask, casts)", role="mrm")
    for b in world.backends().values():
        patch(b, "_validate", "validate + charge")
        patch(b, "_forward", "forward: inputs, mask")
        patch(b, "_buffers", "KV gather")
        patch(b, "_store", "KV write-back")
        patch(b, "apply_head", "head")
        patch(b.decoder, "forward", "decoder (model compute)")
        if isinstance(b, backend_mod.TrieBackend):
            patch(b, "_ensure", "trie: slots, segments")
    patch(backend_mod, "plan_call", "trie: plan")
    patch(Ledger, "charge", "ledger (per-search replay)")
    for name in (
        "expand",
        "score",
        "select",
        "top_p_mask",
        "nucleus",
        "forbid_stop",
        "forbid_stop_",
    ):
        if hasattr(saffron_mod, name):  # the helpers this version of the search calls
            patch(saffron_mod, name, name)
    if hasattr(backend_mod.Backend, "count_head"):  # entries of the MRM's head read by score
        patch(mrm_mod.HeadRewards, "at", "head entries", role="mrm")
    try:
        with _roled("search"):
            yield
    finally:
        for owner, attr, old in reversed(patches):
            if old is None:
                delattr(owner, attr)
            else:
                setattr(owner, attr, old)


@contextmanager
def _roled(role: str) -> Iterator[None]:
    _role.append(role)
    try:
        yield
    finally:
        _role.pop()


def regions(prof: profile, steps: int) -> list[tuple[str, float]]:
    """Each labelled region's time per step (ms), net of the labelled regions inside it.

    The step's own net time is the scheduler (admitting, splitting replies, sending them to
    the searches) and the search code outside the labelled functions.
    """
    events = [e for e in prof.events() if e.name == STEP or ": " in e.name]
    names = {id(e) for e in events}
    net: dict[str, float] = {}
    for e in events:
        span = e.time_range.elapsed_us()
        net[e.name] = net.get(e.name, 0.0) + span
        parent = e.cpu_parent
        while parent is not None and id(parent) not in names:
            parent = parent.cpu_parent
        if parent is not None:
            net[parent.name] = net.get(parent.name, 0.0) - span
    return sorted(((k, v / 1e3 / steps) for k, v in net.items()), key=lambda kv: -kv[1])


def region_table(rows: list[tuple[str, float]]) -> str:
    total = sum(ms for _, ms in rows) or 1.0
    out = ["| region (net of nested regions) | ms / step | share |", "|---|---|---|"]
    for name, ms in rows:
        shown = "scheduler + search loop (rest of the step)" if name == STEP else name
        out.append(f"| {shown} | {ms:.1f} | {ms / total:.0%} |")
    out.append(f"| **total** | **{total:.1f}** | |")
    return "\n".join(out)


def op_table(prof: profile, rows: int, steps: int) -> str:
    """Operators by self CPU time: markdown rows (name, calls per step, self ms per step)."""
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    lines = ["| operator | calls / step | self ms / step | share |", "|---|---|---|---|"]
    for e in events[:rows]:
        ms = e.self_cpu_time_total / 1e3 / steps
        share = e.self_cpu_time_total / total
        lines.append(f"| `{e.key}` | {e.count / steps:.0f} | {ms:.1f} | {share:.1%} |")
    return "\n".join(lines)


def warmed(world: World, k: int, cfg: SearchConfig, warm: int) -> Scheduler:
    """A scheduler with ``k`` Saffron searches (one prompt each) after ``warm`` steps."""
    clear(world)
    sched = Scheduler(world, max_searches=k)
    for i, seq in enumerate(prompts(world, k)):
        sched.submit(i, "saffron", seq, cfg)
    for _ in range(warm):
        sched.step()
    return sched


def computed(world: World) -> int:
    return sum(b.compute.tokens_computed for b in world.backends().values())


def measure(world: World, k: int, cfg: SearchConfig, args: argparse.Namespace) -> str:
    """The markdown report for ``k`` searches in flight."""
    sched = warmed(world, k, cfg, args.warm)
    t0, before = time.perf_counter(), computed(world)
    for _ in range(args.steps):
        sched.step()
    wall = (time.perf_counter() - t0) / args.steps
    tokens = (computed(world) - before) / args.steps
    sched = warmed(world, k, cfg, args.warm)
    with labelled(world), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            with record_function(STEP):
                sched.step()
    rows = regions(prof, args.steps)
    decoder = sum(ms for name, ms in rows if "decoder" in name) / 1e3
    return "\n".join(
        [
            f"**K = {k} in flight, N = {args.width}**: {args.steps} steps after {args.warm}; "
            f"{wall * 1e3:.0f} ms per step without the profiler, {tokens:.0f} positions "
            f"computed per step ({tokens / wall:.0f} tokens/s); the decoder alone "
            f"{tokens / decoder:.0f} tokens/s of its own time.",
            "",
            region_table(rows),
            "",
            op_table(prof, args.rows, args.steps),
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 16], metavar="K")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--warm", type=int, default=8, help="steps run before measuring")
    ap.add_argument("--steps", type=int, default=4, help="steps measured")
    ap.add_argument("--rows", type=int, default=15)
    add_world_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    world = tiny_world() if args.tiny else embedded_world(args.policy, args.mrm)
    stems(world, args.stem_min_mib)
    cfg = SearchConfig(
        budget=args.width, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens
    )
    top = ceiling(world.policy.backend.loaded, args.ceiling_batch, 64)
    print("```\npython " + " ".join(sys.argv) + "\n```\n")
    print(f"Ceiling: {top['tok_s']:.0f} tokens/s ({args.ceiling_batch} × 64, one forward).\n")
    for k in args.in_flight:
        print(measure(world, k, cfg, args))


if __name__ == "__main__":
    main()
