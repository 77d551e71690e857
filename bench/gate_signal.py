"""What Saffron's gate would see: the policy's greedy answers and the MRM's reward of each of
their tokens, on harmful prompts (prefilled) and benign ones, and the share of answers a gate
(k tokens in a row below τ, unseen tokens skipped) would open on.

The gate (``saffron.search.saffron.Gate``) follows the policy's most probable token until the MRM
scores k of them in a row below τ. This measures, for each (τ, k), how often that happens on
benign answers (where it should not) and on attacked ones the guard calls unsafe (where it
should), before any search runs.

Usage::

    python bench/gate_signal.py --harmful H.jsonl --prefills RUN/prefills.jsonl \\
        --benign B.jsonl --out bench/results/gate_signal.jsonl

``H.jsonl`` and ``B.jsonl`` are prompt files (``{"id", "prompt"}`` per line, as ``saffron eval
--dataset FILE`` reads); ``RUN/prefills.jsonl`` is an eval run's prefills for the harmful file.
About 2 minutes for 93 prompts on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from saffron.eval.run import EvalConfig
from saffron.eval.world import load_world
from saffron.search import SearchConfig, World, run_search
from saffron.search.saffron import run_after

GATES = ((0.0, 1), (-0.5, 1), (-1.0, 1), (0.0, 2), (-0.5, 2), (-1.0, 2), (0.0, 3), (-0.5, 3))


def greedy_rewards(world: World, prompt: str, prefill: tuple[int, ...]) -> dict[str, Any]:
    """The greedy answer, the MRM's reward of each of its tokens (−inf: unseen) and the
    guard's reward of the whole answer."""
    assert world.mrm is not None and world.guard is not None
    seq = world.policy.chat.sequence(prompt, prefill_tokens=prefill)
    result = run_search("greedy", world, seq, SearchConfig(budget=1))
    gen = result.generated
    rows = world.mrm.reward_rows([seq.with_generated(gen[:t]) for t in range(len(gen))])
    rewards = rows.at(torch.arange(len(gen)), torch.tensor(gen)).tolist()
    guard = float(world.guard.score([result.sequence])[0])
    return {"text": result.text, "mrm": rewards, "guard": guard}


def opens(rewards: list[float], tau: float, k: int) -> bool:
    """Whether a gate (τ, k) opens on this path: k finite rewards in a row below τ; −inf
    (unseen) entries neither count nor break a run."""
    run = 0
    for r in rewards:
        run = run_after(run, r, tau)  # the shipped gate's rule
        if run >= k:
            return True
    return False


def table(rows: list[dict[str, Any]]) -> str:
    groups = {
        "benign": [r for r in rows if r["kind"] == "benign"],
        "harmful, guard: greedy unsafe": [
            r for r in rows if r["kind"] == "harmful" and r["guard"] < 0
        ],
        "harmful, guard: greedy safe": [
            r for r in rows if r["kind"] == "harmful" and r["guard"] >= 0
        ],
    }
    head = "| gate | " + " | ".join(f"{g} ({len(v)})" for g, v in groups.items()) + " |"
    lines = [head, "|---|" + "---|" * len(groups)]
    for tau, k in GATES:
        shares = [sum(opens(r["mrm"], tau, k) for r in v) / max(len(v), 1) for v in groups.values()]
        lines.append(
            f"| {k} in a row below {tau:g} | " + " | ".join(f"{x:.2f}" for x in shares) + " |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--harmful", type=Path, required=True)
    ap.add_argument("--prefills", type=Path, required=True)
    ap.add_argument("--benign", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = EvalConfig(dataset="-", budgets=(1,), methods=("saffron",))  # the default models
    world = load_world(cfg)
    prefills = {
        p["prompt_id"]: tuple(p["tokens"] or ())
        for p in map(json.loads, args.prefills.read_text(encoding="utf-8").splitlines())
    }
    rows = []
    for kind, path in (("harmful", args.harmful), ("benign", args.benign)):
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            pre = prefills.get(item["id"], ()) if kind == "harmful" else ()
            rows.append(
                {"kind": kind, "id": item["id"], **greedy_rewards(world, item["prompt"], pre)}
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(table(rows))


if __name__ == "__main__":
    main()
