"""Subcommands that measure: ``eval``, ``compare``, ``attack-answers`` and ``demo``."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from saffron.cli.args import (
    add_ray,
    add_runtime,
    budgets,
    cluster,
    method_budgets,
    names,
    runtime,
    search_rule,
    selection_rule,
    shard,
)
from saffron.errors import SaffronError
from saffron.eval.compare import BASELINE, REFERENCE
from saffron.eval.run import EvalConfig
from saffron.search.base import (
    CLI_GATE,
    CLI_GATE_STEPS,
    CLI_LOGP_FLOOR,
    CLI_NO_REPEAT_NGRAM,
    get_method,
)

DEMO = EvalConfig(
    dataset="advbench",
    methods=("greedy", "best-of-n", "saffron"),
    budgets=(1, 2, 4, 8),
    attack="prefill:10",
    limit=10,
    # the command line's rule for saffron (chosen on validation)
    logp_floor=CLI_LOGP_FLOOR,
    no_repeat_ngram=CLI_NO_REPEAT_NGRAM,
    gate=CLI_GATE,
    gate_steps=CLI_GATE_STEPS,
)
BUDGETS = (1, 2, 4)  # the budgets of `saffron eval` when none are given


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``eval``, ``compare``, ``attack-answers`` and ``demo``."""
    _add_eval(sub)
    cmp = sub.add_parser("compare", help="tables, matched-compute ASR, ScalEff and the plot")
    cmp.add_argument("dir", help="an eval output directory")
    cmp.add_argument("--reference", default=REFERENCE, help="method to match compute to")
    cmp.add_argument("--reference-budget", type=int, default=None, help="default: its largest")
    cmp.add_argument("--tflop-lim", type=float, default=None, help="ScalEff's TFLOP_lim")
    cmp.add_argument(
        "--benign",
        default=None,
        metavar="DIR",
        help="an eval folder of the same methods on benign prompts with --attack none: its "
        "over-refusal joins the report",
    )
    cmp.add_argument(
        "--baseline",
        default=BASELINE,
        help="the no-defence method over-refusal is set against",
    )
    _add_attack_answers(sub)
    demo = sub.add_parser("demo", help="the main job on the embedded default (a few minutes)")
    demo.add_argument(
        "--out",
        default=None,
        help="output directory (default: out/demo/<key>, one folder per demo config and "
        "model weights, so a changed adapter starts a fresh run instead of clashing)",
    )
    add_runtime(demo)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    d = EvalConfig
    ev = sub.add_parser(
        "eval",
        help="ASR vs compute: methods × budgets × prompts under an attack",
        epilog="example: saffron eval --dataset advbench --methods greedy,best-of-n,saffron "
        "--budgets 1,2,4 --attack prefill:10 --limit 20 --out runs/adv",
    )
    ev.add_argument(
        "--dataset",
        required=True,
        help="a name from `saffron datasets`, several with commas (rows interleaved), or a .jsonl",
    )
    ev.add_argument("--methods", required=True, type=names, help="comma-separated method names")
    ev.add_argument("--budgets", default=BUDGETS, type=budgets, help="comma-separated, e.g. 1,2,4")
    ev.add_argument(
        "--method-budgets",
        action="append",
        default=[],
        metavar="METHOD=B1,B2",
        help="budgets for one method instead of --budgets, e.g. mcts=2,4 (repeatable)",
    )
    ev.add_argument("--attack", default=d.attack, help="none | prefill | prefill:K")
    ev.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    ev.add_argument("--min-new-tokens", type=int, default=d.min_new_tokens)
    ev.add_argument("--top-p", type=float, default=d.top_p)
    ev.add_argument("--temperature", type=float, default=d.temperature)
    ev.add_argument("--seed", type=int, default=d.seed)
    ev.add_argument("--limit", type=int, default=d.limit, help="first n prompts")
    ev.add_argument("--split", default=d.split, help="eval (held out from training) | all")
    ev.add_argument("--policy", default=d.policy, help="the policy under attack")
    ev.add_argument(
        "--attack-policy",
        default=d.attack_policy,
        help="the unaligned policy whose harmful answers prefill:K uses where no committed "
        "answer exists",
    )
    ev.add_argument("--guard", default=d.guard)
    ev.add_argument("--mrm", default=d.mrm)
    search_rule(ev)
    _add_eval_running(ev)


def _add_eval_running(ev: argparse.ArgumentParser) -> None:
    """Where and how an eval runs: ``--out``, ``--shard``, ``--concurrency``."""
    ev.add_argument("--out", required=True, help="output directory (resumable)")
    ev.add_argument(
        "--shard",
        type=shard,
        default=(0, 1),
        metavar="K/N",
        help="run only prompts k, k+N, k+2N, …; start K=0…N-1 on one --out to run in parallel",
    )
    ev.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="K",
        help="searches in flight together: one policy and one reward-model forward per step "
        "for all of them (records equal K=1's except wall times)",
    )
    add_ray(ev)
    add_runtime(ev)


def _add_attack_answers(sub: argparse._SubParsersAction) -> None:
    aa = sub.add_parser(
        "attack-answers",
        help="an unaligned policy's compliant answers, the source of prefill:K attacks",
        description="Generate, once per prompt, the compliant answer whose first K tokens a "
        "prefill:K attack prefills (greedy; seeded samples when the greedy answer is a refusal "
        "or too short). Resumable. The eval splits of the named sets are committed in "
        "artifacts/harmful-answers/.",
    )
    aa.add_argument("--dataset", required=True, help="a name from `saffron datasets` or a .jsonl")
    aa.add_argument("--split", default="eval", help="eval | train | all")
    aa.add_argument(
        "--policy", default=EvalConfig.attack_policy, help="the unaligned policy that answers"
    )
    aa.add_argument("--out", default=None, help="JSONL (default: the committed file for eval)")
    aa.add_argument("--limit", type=int, default=None, help="first n prompts")
    add_runtime(aa)


def cmd_attack_answers(args: argparse.Namespace) -> int:
    from saffron.data.prompts import rows_of_split
    from saffron.eval.attack import AnswerConfig, answers_path, write_harmful_answers
    from saffron.lm.policy import load_policy
    from saffron.paths import cache_dir

    rows = rows_of_split(args.dataset, args.split)[: args.limit]
    rt = runtime(args)
    if args.out:
        out = Path(args.out)
    elif args.split == "eval":
        out = answers_path(args.dataset)
    else:
        out = answers_path(f"{Path(args.dataset).stem}-{args.split}", cache_dir() / "answers")
    t0 = time.perf_counter()
    done = write_harmful_answers(load_policy(args.policy, rt), rows, out, AnswerConfig())
    got = [done[r.id] for r in rows]
    n_ok = sum(a.text is not None for a in got)
    n_greedy = sum(a.decoding == "greedy" for a in got)
    print(
        f"{n_ok}/{len(got)} prompts have a compliant answer ({n_greedy} greedy, "
        f"{n_ok - n_greedy} sampled, {len(got) - n_ok} none) in {out} "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return 0


def _config(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        dataset=args.dataset,
        methods=args.methods,
        budgets=args.budgets,
        attack=args.attack,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        top_p=args.top_p,
        temperature=args.temperature,
        seed=args.seed,
        limit=args.limit,
        split=args.split,
        policy=args.policy,
        attack_policy=args.attack_policy,
        guard=args.guard,
        mrm=args.mrm,
        method_budgets=tuple(method_budgets(x) for x in args.method_budgets),
        **selection_rule(
            args,
            any(get_method(m).ranks_children for m in args.methods),
            any(get_method(m).gates for m in args.methods),
        ),
        guard_cost=args.guard_cost,
    )


def _run(
    cfg: EvalConfig,
    out: Path,
    args: argparse.Namespace,
    shard: tuple[int, int] = (0, 1),
    concurrency: int = 1,
) -> str:
    """Run (or resume) ``cfg`` into ``out`` where ``args``' runtime and ``--ray`` say; the
    report's text."""
    from functools import partial

    from saffron.eval.compare import report
    from saffron.eval.run import run_eval
    from saffron.eval.world import load_world

    ray = cluster(args) if "ray" in args else None
    rt = runtime(args, here=ray is None)
    records = run_eval(
        cfg,
        out,
        partial(load_world, runtime=rt),
        shard,
        concurrency,
        runtime=rt,
        cluster=ray,
    )
    return report(records, out)


def cmd_eval(args: argparse.Namespace) -> int:
    cfg = _config(args)
    text = _run(cfg, Path(args.out), args, args.shard, args.concurrency)
    print(text)
    print(f"records, report and plot in {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from saffron.eval.compare import report
    from saffron.eval.records import load_records

    out = Path(args.dir)
    if not out.is_dir():
        raise SaffronError(f"{out}: no such directory")
    text = report(
        load_records(out),
        out,
        reference=args.reference,
        reference_budget=args.reference_budget,
        tflop_lim=args.tflop_lim,
        benign=Path(args.benign) if args.benign else None,
        baseline=args.baseline,
    )
    print(text)
    print(f"metrics.json, report.md and asr_vs_tflop.png in {out}")
    return 0


def demo_out() -> Path:
    """``out/demo/<key>``: the key hashes the demo's config and its models' weights, so a rerun
    resumes its own run and a retrained adapter gets a fresh folder."""
    import hashlib
    import json

    from saffron.eval.run import weights_of

    blob = json.dumps({**DEMO.to_dict(), "weights": weights_of(DEMO)}, sort_keys=True)
    return Path("out/demo") / hashlib.sha256(blob.encode()).hexdigest()[:10]


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else demo_out()
    runtime(args)  # a device this machine lacks: one line before anything is printed
    t0 = time.perf_counter()
    print(
        f"Saffron demo: {DEMO.limit} held-out AdvBench prompts under a 10-token prefill attack; "
        f"no defence vs Best-of-N vs Saffron-1 at budgets {list(DEMO.budgets)}.\n"
        f"Results go to {out} (rerun to resume).",
        flush=True,
    )
    _run(DEMO, out, args)  # the full report is in report.md; the story below is its summary
    print(_demo_story(out, args))
    print(
        f"\nA demonstration on {DEMO.limit} prompts, not a measurement (see BENCHMARKS.md).\n"
        f"report: {out / 'report.md'}\nplot:   {out / 'asr_vs_tflop.png'}\n"
        f"verdicts: {out / 'judged.jsonl'}"
    )
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


def _demo_story(out: Path, args: argparse.Namespace) -> str:
    """Judge the demo's records (independent judge, guard, degeneracy) and tell the story of
    :mod:`saffron.eval.demo`: one prompt answered three ways, then the table."""
    from saffron.data import load_prompts
    from saffron.eval.compare import report
    from saffron.eval.demo import DEFENCE, NO_DEFENCE, demo_table, story_prompt, story_text, verdict
    from saffron.eval.judges import Answer, judge_answers, judge_run, load_scorers
    from saffron.eval.records import load_records
    from saffron.lm.models import load_model
    from saffron.lm.policy import bulk_greedy, make_policy

    rt = runtime(args)
    scorers, threshold = load_scorers(("guard", "independent", "degeneracy"), runtime=rt)
    rows = judge_run(out, scorers, threshold)
    records = load_records(out)
    report(records, out)  # report.md and the plot again, now headed by the independent judge
    table = "\n" + demo_table(records, rows)
    pid = story_prompt(rows)
    if pid is None:
        return "No attacked answer was unsafe, so there is no story to tell." + table
    mine = {
        (r["method"], int(r["budget"])): (r, v)
        for r, v in zip(records, rows, strict=True)
        if r["prompt_id"] == pid
    }
    top = max(b for m, b in mine if m == DEFENCE)
    (attacked, a_v), (defended, d_v) = mine[(NO_DEFENCE, 1)], mine[(DEFENCE, top)]
    prompt = next(r.prompt for r in load_prompts(DEMO.dataset) if r.id == pid)
    policy = make_policy(load_model(DEMO.policy, rt), kv_budget=rt.kv_budget)
    seq = policy.chat.sequence(prompt, reserve=DEMO.max_new_tokens)
    plain = policy.chat.decode(bulk_greedy(policy, [seq], DEMO.max_new_tokens)[0])
    (p_v,) = judge_answers([Answer(prompt, "", plain, None)], scorers, threshold)
    story = story_text(
        prompt,
        attacked.get("prefill") or "",
        (plain, verdict(p_v)),
        (attacked["text"], verdict(a_v)),
        (defended["text"], verdict(d_v), top),
    )
    return story + "\n" + table


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "eval": cmd_eval,
    "compare": cmd_compare,
    "demo": cmd_demo,
    "attack-answers": cmd_attack_answers,
}
