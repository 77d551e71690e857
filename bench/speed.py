"""Speed of the search, side by side: Saffron against Hugging Face ``generate``, many searches
in flight, the machine's batched-forward ceiling (issue 17).

Held-out AdvBench prompts (eval split) with a 10-token prefill taken from the committed harmful
answers, exactly T new tokens per beam (min = max new tokens), top-p 0.8. Measures:

* per prompt, Saffron at N = 4, 16, 64 (one search at a time) against HF ``generate`` sampling
  the same N × T tokens from the policy alone (its own KV cache, one batch);
* throughput with K = 1, 4, 16 searches in flight (the scheduler; N = 16);
* cost against N (4, 16, 64) and new tokens (32, 64, 128): TFLOP per prompt (Proposition 2);
* the ceiling: tokens/s of one batched forward of the policy at a large batch;
* peak memory at K = 16, N = 64 against the KV byte budget plus the model weights.

Prints a markdown block (with the exact command) for BENCHMARKS.md and writes
``speed.json`` and ``speed.png`` (tokens/s against N and against K, the ceiling as a line) to
``--out``. ``--tiny`` runs the whole thing on the tiny random model in seconds (a smoke test of
the script, not a measurement).

Usage: ``python bench/speed.py [--prompts 10] [--out bench/results/speed] [--tiny]``
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from saffron.eval.attack import answers_path, read_answers
from saffron.eval.run import rows_of_split
from saffron.lm.backend import TrieBackend
from saffron.lm.models import LoadedModel, load_model
from saffron.lm.policy import make_policy
from saffron.reward.mrm import MRM, Layout
from saffron.search import SearchConfig, World, run_search
from saffron.search.scheduler import Scheduler
from saffron.types import TokenSequence

Row = dict[str, Any]


def tiny_world() -> World:
    """The tiny random model as policy and MRM (for smoke runs of this script)."""
    policy = make_policy(load_model("tiny-random-llama"))
    backend = TrieBackend(load_model("tiny-random-llama"))
    vocab = backend.vocab_size
    mrm = MRM(
        backend,
        name="tiny-mrm",
        layout=Layout((1,), (2,)),
        bias=torch.zeros(vocab),
        unseen=torch.zeros(vocab, dtype=torch.bool),
    )
    return World(policy, mrm=mrm)


def embedded_world(policy_name: str = "smol-aligned", mrm_name: str = "smol-mrm") -> World:
    from saffron.reward.mrm_load import load_mrm

    policy = make_policy(load_model(policy_name))
    return World(policy, mrm=load_mrm(mrm_name, policy))


def prompts(world: World, n: int, prefill: int = 10) -> list[TokenSequence]:
    """``n`` held-out AdvBench prompts, each with the first ``prefill`` tokens of its
    committed harmful answer (no prefill where none is committed)."""
    answers = read_answers(answers_path("advbench"))
    chat = world.policy.chat
    out = []
    for row in rows_of_split("advbench", "eval")[:n]:
        ans = answers.get(row.id)
        toks = tuple(chat.encode(ans.text))[:prefill] if ans else ()
        out.append(chat.sequence(row.prompt, prefill_tokens=toks, reserve=256))
    return out


def stems(world: World, min_mib: float | None) -> None:
    """Set every backend's shared-stem threshold (None: leave the backends' default)."""
    if min_mib is not None:
        for b in world.backends().values():
            b.stem_min_bytes = int(min_mib * 2**20)


def add_world_args(ap: argparse.ArgumentParser) -> None:
    """The options the speed benches share: the ceiling's batch, threads, shared stems, and
    the world measured (the embedded policy and MRM, or the tiny random model)."""
    ap.add_argument("--ceiling-batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--stem-min-mib",
        type=float,
        default=None,
        help="share stems in forwards saving at least this many MiB of gathered KV "
        "(saffron.lm.stem; default: the backend's setting)",
    )
    ap.add_argument("--policy", default="smol-aligned")
    ap.add_argument("--mrm", default="smol-mrm")
    ap.add_argument("--tiny", action="store_true", help="smoke run on the tiny random model")


def clear(world: World) -> None:
    for b in world.backends().values():
        b.clear()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def saffron_alone(world: World, seqs: list[TokenSequence], n: int, new: int) -> Row:
    """Saffron one prompt at a time from a cleared cache: median seconds, tokens, TFLOP."""
    cfg = SearchConfig(budget=n, max_new_tokens=new, min_new_tokens=new, top_p=0.8)
    walls, computed, tflop = [], [], []
    for seq in seqs:
        clear(world)
        wall, res = timed(lambda s=seq: run_search("saffron", world, s, cfg))
        walls.append(wall)
        computed.append(sum(m.tokens_computed for m in res.compute.per_model.values()))
        tflop.append(res.compute.tflop)
    s = statistics.median(walls)
    tok = statistics.median(computed)
    return {"n": n, "new": new, "s": s, "computed": tok, "tok_s": tok / s,
            "new_tok_s": n * new / s, "tflop": statistics.median(tflop)}  # fmt: skip


def hf_generate(loaded: LoadedModel, seqs: list[TokenSequence], n: int, new: int) -> Row:
    """HF ``generate`` sampling N × ``new`` tokens from the policy: median seconds per prompt."""
    model = loaded.model
    walls = []
    for i, seq in enumerate(seqs):
        ids = torch.tensor([list(seq.tokens)] * n, device=next(model.parameters()).device)
        torch.manual_seed(i)
        wall, _ = timed(
            lambda ids=ids: model.generate(  # type: ignore[operator]
                input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_p=0.8,
                max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
            )
        )  # fmt: skip
        walls.append(wall)
    s = statistics.median(walls)
    return {"n": n, "new": new, "s": s, "new_tok_s": n * new / s}


def in_flight(world: World, seqs: list[TokenSequence], k: int, n: int, new: int) -> Row:
    """All ``seqs`` through the scheduler, ``k`` at a time: aggregate tokens/s that ran."""
    clear(world)
    cfg = SearchConfig(budget=n, max_new_tokens=new, min_new_tokens=new, top_p=0.8)
    backends = world.backends()
    before = {r: b.compute.tokens_computed for r, b in backends.items()}
    sched = Scheduler(world, max_searches=k)
    for i, seq in enumerate(seqs):
        sched.submit(i, "saffron", seq, replace(cfg, seed=i))
    wall, done = timed(lambda: list(sched.run()))
    assert all(d.error is None for d in done), [d.error for d in done if d.error]
    ran = sum(b.compute.tokens_computed - before[r] for r, b in backends.items())
    peak = max(b.stats().bytes_allocated for b in backends.values())
    return {"k": k, "n": n, "prompts": len(seqs), "s": wall, "tok_s": ran / wall,
            "s_per_prompt": wall / len(seqs), "pool_bytes": peak}  # fmt: skip


def ceiling(loaded: LoadedModel, batch: int, length: int, repeats: int = 3) -> Row:
    """Tokens/s of one batched forward of ``batch`` × ``length`` tokens (no cache)."""
    model = loaded.model
    vocab = int(model.get_output_embeddings().weight.shape[0])  # type: ignore[operator,union-attr]
    ids = torch.randint(0, vocab, (batch, length), device=next(model.parameters()).device)
    walls = []
    with torch.inference_mode():
        for _ in range(repeats):
            walls.append(timed(lambda: model(input_ids=ids))[0])  # type: ignore[operator]
    s = min(walls)
    return {"batch": batch, "length": length, "s": s, "tok_s": batch * length / s}


def memory(world: World) -> Row:
    """Peak resident memory against the KV budget plus the weights (bytes)."""
    weights = sum(
        sum(p.numel() * p.element_size() for p in b.model.parameters())
        for b in world.backends().values()
    )
    budget = sum(getattr(b, "max_bytes", 0) for b in world.backends().values())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"peak_rss": peak, "kv_budget": budget, "weights": weights}


def markdown(res: dict[str, Any], command: str) -> str:
    """The tables for BENCHMARKS.md."""
    lines = ["```", command, "```", "", f"Ceiling: {res['ceiling']['tok_s']:.0f} tokens/s "
             f"(one forward, {res['ceiling']['batch']} × {res['ceiling']['length']} tokens).", "",
             "| N | new | Saffron s/prompt | HF generate s/prompt | ratio | Saffron tokens/s "
             "(computed) | TFLOP/prompt |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    hf = {(r["n"], r["new"]): r for r in res["hf"]}
    for r in res["alone"]:
        h = hf.get((r["n"], r["new"]))
        hs = f"{h['s']:.2f}" if h else "–"
        ratio = f"{r['s'] / h['s']:.2f}" if h else "–"
        lines.append(
            f"| {r['n']} | {r['new']} | {r['s']:.2f} | {hs} | {ratio} | {r['tok_s']:.0f} | "
            f"{r['tflop']:.3g} |"
        )
    lines += ["", "| K in flight | N | prompts | s/prompt | tokens/s | share of ceiling | "
              "× K=1 | KV pool MiB |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    base = res["flight"][0]["tok_s"]
    for r in res["flight"]:
        lines.append(
            f"| {r['k']} | {r['n']} | {r['prompts']} | {r['s_per_prompt']:.2f} | "
            f"{r['tok_s']:.0f} | {r['tok_s'] / res['ceiling']['tok_s']:.0%} | "
            f"{r['tok_s'] / base:.1f} | {r['pool_bytes'] / 2**20:.0f} |"
        )
    m = res["memory"]
    lines += ["", f"Peak RSS {m['peak_rss'] / 2**20:.0f} MiB; start {m['start_rss'] / 2**20:.0f} "
              f"MiB + weights {m['weights'] / 2**20:.0f} MiB + KV budget "
              f"{m['kv_budget'] / 2**20:.0f} MiB = {m['bound'] / 2**20:.0f} MiB."]  # fmt: skip
    return "\n".join(lines)


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    top = res["ceiling"]["tok_s"]
    rows = [r for r in res["alone"] if r["new"] == res["new"]]
    a.plot([r["n"] for r in rows], [r["tok_s"] for r in rows], "o-", label="Saffron (computed)")
    a.set(xscale="log", xlabel="N (one prompt)", ylabel="tokens/s")
    b.plot([r["k"] for r in res["flight"]], [r["tok_s"] for r in res["flight"]], "o-",
           label=f"Saffron N={res['flight'][0]['n']}")  # fmt: skip
    b.set(xscale="log", xlabel="K searches in flight")
    for ax in (a, b):
        ax.axhline(top, color="k", ls="--", label="batched-forward ceiling")
        ax.set_ylim(0, top * 1.1)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args: argparse.Namespace) -> dict[str, Any]:
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    world = tiny_world() if args.tiny else embedded_world(args.policy, args.mrm)
    stems(world, args.stem_min_mib)
    seqs = prompts(world, args.prompts)
    loaded = world.policy.backend.loaded
    ns, news = args.widths, args.new_tokens
    res: dict[str, Any] = {"new": news[0], "prompts": len(seqs)}
    res["ceiling"] = ceiling(loaded, args.ceiling_batch, 64)
    res["alone"] = [saffron_alone(world, seqs, n, news[0]) for n in ns]
    res["alone"] += [saffron_alone(world, seqs, ns[1], t) for t in news[1:]]
    res["hf"] = [hf_generate(loaded, seqs, n, news[0]) for n in ns]
    flight_seqs = (seqs * (1 + args.flight_prompts // len(seqs)))[: args.flight_prompts]
    res["flight"] = [in_flight(world, flight_seqs, k, ns[1], news[0]) for k in args.in_flight]
    in_flight(world, flight_seqs, args.in_flight[-1], ns[-1], news[0])  # peak: largest K × N
    mem = memory(world)
    mem["start_rss"] = start_rss
    mem["bound"] = start_rss + mem["weights"] + mem["kv_budget"]
    res["memory"] = mem
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--prompts", type=int, default=10, help="prompts per measurement")
    ap.add_argument("--flight-prompts", type=int, default=32, help="prompts through the scheduler")
    ap.add_argument("--widths", type=int, nargs=3, default=[4, 16, 64], metavar="N")
    ap.add_argument("--new-tokens", type=int, nargs=3, default=[32, 64, 128], metavar="T")
    ap.add_argument("--in-flight", type=int, nargs="+", default=[1, 4, 16], metavar="K")
    add_world_args(ap)
    ap.add_argument("--out", default="bench/results/speed")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(res, indent=1))
    plot(res, out / "speed.png")
    print(markdown(res, "python " + " ".join(sys.argv)))


if __name__ == "__main__":
    main()
