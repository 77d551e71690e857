"""Saffron on a GPU, in one short prepared run (issue: past one machine).

Two measurements, on ``--device`` (default ``cuda``) in ``--dtype`` (default ``bfloat16``):

1. **Search against generate.** Held-out AdvBench prompts with a 10-token prefill (as
   ``bench/speed.py``), the embedded policy ``smol-aligned`` (SmolLM2-135M) and ``smol-mrm``:
   Saffron at N = 16 and 64, exactly T new tokens per beam, one prompt at a time from a cleared
   cache, against Hugging Face ``generate`` sampling the same N × T tokens from the policy alone
   (its own KV cache, one batch). Median seconds per prompt and their ratio; one warm-up of
   each first (CUDA start-up, kernel choice), a synchronize after each timed call.
2. **The eval end to end.** ``saffron eval --device cuda --dtype bfloat16`` on a few prompts
   (greedy, Best-of-N and Saffron), as a user runs it: exit status, wall seconds, records.

Prints a markdown block (with the exact command) for BENCHMARKS.md and writes ``gpu.json`` to
``--out``. On a machine without the device it prints one line saying so and exits with status
2, having measured nothing. Needs the project installed with a CUDA build of torch and the
embedded model file (``make setup``); about 3 minutes on one GPU.

Usage: ``python bench/gpu.py [--prompts 5] [--out bench/results/gpu]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from speed import prompts  # bench/speed.py, beside this file

from saffron.errors import SaffronError
from saffron.lm.backend import TrieBackend
from saffron.lm.models import TINY, load_model
from saffron.lm.policy import make_policy
from saffron.reward.mrm import MRM, Layout
from saffron.reward.mrm_load import load_mrm
from saffron.runtime import RuntimeConfig
from saffron.search import SearchConfig, World, run_search
from saffron.types import TokenSequence

Row = dict[str, Any]
EVAL_METHODS = "greedy,best-of-n,saffron"


def synced(device: torch.device, fn: Callable[[], Any]) -> float:
    """Seconds of ``fn()``, the device synchronized before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def clear(world: World) -> None:
    for backend in world.backends().values():
        backend.clear()


def saffron_s(world: World, seqs: list[TokenSequence], n: int, new: int, dev: torch.device) -> Row:
    """Saffron at width ``n``, one prompt at a time from a cleared cache (after a warm-up)."""
    cfg = SearchConfig(budget=n, max_new_tokens=new, min_new_tokens=new, top_p=0.8)
    clear(world)
    run_search("saffron", world, seqs[0], cfg)  # warm-up
    walls = []
    for seq in seqs:
        clear(world)
        walls.append(synced(dev, lambda s=seq: run_search("saffron", world, s, cfg)))
    return {"n": n, "new": new, "s": statistics.median(walls)}


def generate_s(world: World, seqs: list[TokenSequence], n: int, new: int, dev: torch.device) -> Row:
    """HF ``generate`` sampling ``n`` × ``new`` tokens per prompt (after a warm-up)."""
    model = world.policy.backend.loaded.model

    def one(seq: TokenSequence, seed: int) -> None:
        ids = torch.tensor([list(seq.tokens)] * n, device=dev)
        torch.manual_seed(seed)
        with torch.inference_mode():
            model.generate(  # type: ignore[operator]
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_p=0.8,
                max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
            )  # fmt: skip

    one(seqs[0], 0)  # warm-up
    walls = [synced(dev, lambda s=s, i=i: one(s, i)) for i, s in enumerate(seqs)]
    return {"n": n, "new": new, "s": statistics.median(walls)}


def eval_end_to_end(args: argparse.Namespace) -> Row:
    """``saffron eval`` on ``args.eval_prompts`` prompts on the device, as a user runs it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "saffron", "eval", "--dataset", "advbench",
               "--methods", EVAL_METHODS, "--budgets", "4", "--limit", str(args.eval_prompts),
               "--device", args.device, "--dtype", args.dtype, "--out", str(out)]  # fmt: skip
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        recs = (out / "records.jsonl").read_text().splitlines() if done.returncode == 0 else []
    tail = (done.stderr.strip().splitlines() or [""])[-1]
    return {"command": " ".join(["saffron", *cmd[3:-2]]), "exit": done.returncode,
            "wall_s": wall, "records": len(recs), "last_stderr": tail}  # fmt: skip


def load(args: argparse.Namespace, rt: RuntimeConfig) -> World:
    """The policy and the MRM with ``rt`` (``--tiny``: the tiny random model, a smoke run)."""
    policy = make_policy(load_model(TINY if args.tiny else args.policy, rt), kv_budget=rt.kv_budget)
    if not args.tiny:
        return World(policy, mrm=load_mrm(args.mrm, policy, runtime=rt))
    backend = TrieBackend(load_model(TINY, rt), max_bytes=rt.kv_budget)
    vocab = backend.vocab_size
    unseen = torch.zeros(vocab, dtype=torch.bool)
    mrm = MRM(backend, name="tiny-mrm", layout=Layout((1,), (2,)), bias=torch.zeros(vocab),
              unseen=unseen)  # fmt: skip
    return World(policy, mrm=mrm)


def run(args: argparse.Namespace) -> Row:
    rt = RuntimeConfig(device=args.device, dtype=args.dtype)
    dev = rt.check()
    world = load(args, rt)
    seqs = prompts(world, args.prompts)
    rows = []
    for n in args.widths:
        s, h = saffron_s(world, seqs, n, args.new, dev), generate_s(world, seqs, n, args.new, dev)
        rows.append({**s, "hf_s": h["s"], "ratio": s["s"] / h["s"]})
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else str(dev)
    end_to_end = None if args.tiny else eval_end_to_end(args)
    return {"device": name, "dtype": rt.dtype, "prompts": len(seqs), "search": rows,
            "eval": end_to_end}  # fmt: skip


def markdown(res: Row, command: str) -> str:
    lines = ["```", command, "```", "", f"{res['device']}, {res['dtype']}, {res['prompts']} "
             "prompts per measurement (median).", "",
             "| N | new | Saffron s/prompt | HF generate s/prompt | ratio |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in res["search"]:
        lines.append(
            f"| {r['n']} | {r['new']} | {r['s']:.3f} | {r['hf_s']:.3f} | {r['ratio']:.2f} |"
        )
    e = res["eval"]
    if e is not None:
        lines += ["", f"`{e['command']}`: exit {e['exit']}, {e['records']} records in "
                  f"{e['wall_s']:.0f} s (model loading included)."]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--prompts", type=int, default=5, help="prompts per measurement")
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64], metavar="N")
    ap.add_argument("--new", type=int, default=32, help="new tokens per beam")
    ap.add_argument("--eval-prompts", type=int, default=3, help="prompts of the end-to-end eval")
    ap.add_argument("--policy", default="smol-aligned")
    ap.add_argument("--mrm", default="smol-mrm")
    ap.add_argument("--out", default="bench/results/gpu")
    ap.add_argument("--tiny", action="store_true", help="smoke run: the tiny model, no eval")
    args = ap.parse_args()
    try:
        RuntimeConfig(device=args.device, dtype=args.dtype).check()
    except SaffronError as err:
        print(f"bench/gpu.py: no GPU here, nothing measured ({err})", file=sys.stderr)
        raise SystemExit(2) from None
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(res, indent=1))
    print(markdown(res, "python " + " ".join(sys.argv)))


if __name__ == "__main__":
    main()
