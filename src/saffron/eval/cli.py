"""Subcommands ``eval``, ``compare`` and ``demo`` (registered by :mod:`saffron.cli`)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from saffron.errors import SaffronError
from saffron.eval.run import ATTACK_POLICY, EvalConfig

DEMO = EvalConfig(
    dataset="advbench",
    methods=("greedy", "best-of-n", "saffron"),
    budgets=(1, 2, 4, 8),
    attack="prefill:10",
    limit=10,
)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _budgets(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"budgets must be integers like 1,2,4, got {text!r}"
        ) from None


def add_parsers(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser(
        "eval",
        help="ASR vs compute: methods × budgets × prompts under an attack",
        epilog="example: saffron eval --dataset advbench --methods greedy,best-of-n,saffron "
        "--budgets 1,2,4 --attack prefill:10 --limit 20 --out runs/adv",
    )
    ev.add_argument("--dataset", required=True, help="a name from `saffron datasets` or a .jsonl")
    ev.add_argument("--methods", required=True, type=_csv, help="comma-separated method names")
    ev.add_argument(
        "--budgets", default=(1, 2, 4), type=_budgets, help="comma-separated, e.g. 1,2,4"
    )
    ev.add_argument(
        "--method-budgets",
        action="append",
        default=[],
        metavar="METHOD=B1,B2",
        help="budgets for one method instead of --budgets, e.g. mcts=2,4 (repeatable)",
    )
    ev.add_argument("--attack", default="prefill:10", help="none | prefill | prefill:K")
    ev.add_argument("--max-new-tokens", type=int, default=32)
    ev.add_argument("--min-new-tokens", type=int, default=16)
    ev.add_argument("--top-p", type=float, default=0.8)
    ev.add_argument("--temperature", type=float, default=1.0)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--limit", type=int, default=None, help="first n prompts")
    ev.add_argument("--split", default="eval", help="eval (held out from training) | all")
    ev.add_argument("--policy", default=EvalConfig.policy, help="the policy under attack")
    ev.add_argument(
        "--attack-policy",
        default=ATTACK_POLICY,
        help="the unaligned policy whose harmful answers prefill:K uses where no committed "
        "answer exists",
    )
    ev.add_argument("--guard", default="smol-guard")
    ev.add_argument("--mrm", default="smol-mrm")
    add_search_rule_options(ev)
    ev.add_argument("--out", required=True, help="output directory (resumable)")
    ev.add_argument(
        "--shard",
        type=_shard,
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

    cmp = sub.add_parser("compare", help="tables, matched-compute ASR, ScalEff and the plot")
    cmp.add_argument("dir", help="an eval output directory")
    cmp.add_argument("--reference", default="best-of-n", help="method to match compute to")
    cmp.add_argument("--reference-budget", type=int, default=None, help="default: its largest")
    cmp.add_argument("--tflop-lim", type=float, default=None, help="ScalEff's TFLOP_lim")

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
    aa.add_argument("--policy", default=ATTACK_POLICY, help="the unaligned policy that answers")
    aa.add_argument("--out", default=None, help="JSONL (default: the committed file for eval)")
    aa.add_argument("--limit", type=int, default=None, help="first n prompts")

    demo = sub.add_parser("demo", help="the main job on the embedded default (a few minutes)")
    demo.add_argument("--out", default="out/demo", help="output directory")


def add_search_rule_options(p: argparse.ArgumentParser) -> None:
    """``--logp-weight``, ``--logp-floor`` (selection of saffron and beam; defaults from
    :class:`~saffron.search.base.SearchConfig`) and ``--guard-cost`` (how guard calls are
    billed, :mod:`saffron.reward.costing`)."""
    from saffron.reward.costing import DEFAULT_SUFFIX_TOKENS, READOUT
    from saffron.search.base import SearchConfig

    p.add_argument(
        "--logp-weight",
        type=float,
        default=SearchConfig.logp_weight,
        metavar="BETA",
        help="saffron, beam: rank children by reward + BETA·log π(answer so far) "
        f"(default {SearchConfig.logp_weight}: reward alone, the paper's rule)",
    )
    p.add_argument(
        "--logp-floor",
        type=float,
        default=SearchConfig.logp_floor,
        metavar="NATS",
        help="saffron, beam: no child more than NATS below the policy's most probable token "
        "(default: no floor, the paper's rule)",
    )
    p.add_argument(
        "--guard-cost",
        default=READOUT,
        metavar="readout|suffix[:N]",
        help="bill each guard call as run (readout) or as a suffix guard would compute it, N "
        f"more positions per call (suffix: N = {DEFAULT_SUFFIX_TOKENS}, Llama Guard 3's "
        "closing instruction); an accounting model, answers unchanged",
    )


def cmd_attack_answers(args: argparse.Namespace) -> int:
    from saffron.data.prompts import rows_of_split
    from saffron.eval.attack import AnswerConfig, answers_path, write_harmful_answers
    from saffron.lm.policy import load_policy
    from saffron.paths import cache_dir

    rows = rows_of_split(args.dataset, args.split)[: args.limit]
    if args.out:
        out = Path(args.out)
    elif args.split == "eval":
        out = answers_path(args.dataset)
    else:
        out = answers_path(f"{Path(args.dataset).stem}-{args.split}", cache_dir() / "answers")
    t0 = time.perf_counter()
    done = write_harmful_answers(load_policy(args.policy), rows, out, AnswerConfig())
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
        method_budgets=tuple(_method_budgets(x) for x in args.method_budgets),
        logp_weight=args.logp_weight,
        logp_floor=args.logp_floor,
        guard_cost=args.guard_cost,
    )


def _shard(text: str) -> tuple[int, int]:
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return int(k), int(n)


def _method_budgets(text: str) -> tuple[str, tuple[int, ...]]:
    name, sep, values = text.partition("=")
    if not sep or not name.strip():
        raise SaffronError(f"--method-budgets expects METHOD=B1,B2, got {text!r}")
    try:
        return name.strip(), _budgets(values)
    except argparse.ArgumentTypeError as err:
        raise SaffronError(str(err)) from None


def _run(cfg: EvalConfig, out: Path, shard: tuple[int, int] = (0, 1), concurrency: int = 1) -> str:
    from saffron.eval.compare import report
    from saffron.eval.run import run_eval
    from saffron.eval.world import load_world

    return report(run_eval(cfg, out, load_world, shard, concurrency), out)


def cmd_eval(args: argparse.Namespace) -> int:
    text = _run(_config(args), Path(args.out), args.shard, args.concurrency)
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
    )
    print(text)
    print(f"metrics.json, report.md and asr_vs_tflop.png in {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    t0 = time.perf_counter()
    print(
        f"Saffron demo: {DEMO.limit} held-out AdvBench prompts under a 10-token prefill attack; "
        f"no defence vs Best-of-N vs Saffron-1 at budgets {list(DEMO.budgets)}.\n"
        f"Results go to {out} (rerun to resume).",
        flush=True,
    )
    text = _run(DEMO, out)
    print(text)
    print(f"report: {out / 'report.md'}\nplot:   {out / 'asr_vs_tflop.png'}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "eval": cmd_eval,
    "compare": cmd_compare,
    "demo": cmd_demo,
    "attack-answers": cmd_attack_answers,
}
