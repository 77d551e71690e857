"""Subcommands that answer and judge one prompt, and list or prepare what Saffron knows:
``generate``, ``judge``, ``models``, ``datasets``, ``methods``, ``setup``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from saffron.cli.args import add_runtime, integer, options, runtime, search_rule, selection_rule
from saffron.errors import SaffronError
from saffron.lm.models import ALIGNED
from saffron.lm.policy import Policy
from saffron.reward.costing import parse_guard_cost
from saffron.reward.loading import DEFAULT_GUARD
from saffron.reward.mrm_load import SMOL_MRM
from saffron.runtime import RuntimeConfig
from saffron.search import SearchConfig, World
from saffron.search.base import MethodSpec, check_config, check_rule_used

DEFAULT_POLICY = ALIGNED  # the embedded world's policy under attack


def add_answer_parsers(sub: argparse._SubParsersAction) -> None:
    """``generate`` and ``judge``."""
    gen = sub.add_parser("generate", help="answer one prompt with a search method")
    gen.add_argument("--prompt", required=True, help="the user prompt")
    gen.add_argument("--prefill", default="", help="attacker prefill of the answer (not judged)")
    gen.add_argument("--method", default="greedy", help="search method (see `saffron methods`)")
    gen.add_argument(
        "--budget", type=integer, default=SearchConfig.budget, help="method width / samples"
    )
    gen.add_argument("--policy", default=DEFAULT_POLICY, help="policy model name or folder")
    gen.add_argument("--max-new-tokens", type=integer, default=SearchConfig.max_new_tokens)
    gen.add_argument(
        "--min-new-tokens",
        type=integer,
        default=SearchConfig.min_new_tokens,
        help="stop tokens forbidden before",
    )
    gen.add_argument("--temperature", type=float, default=SearchConfig.temperature)
    gen.add_argument(
        "--top-p", type=float, default=SearchConfig.top_p, help="nucleus for sampling and children"
    )
    gen.add_argument("--seed", type=int, default=SearchConfig.seed)
    gen.add_argument("--guard", default=DEFAULT_GUARD, help="guard for methods that need one")
    gen.add_argument("--mrm", default=SMOL_MRM, help="MRM for methods that need one")
    gen.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, e.g. children=4, lookahead=8, conservative=false (repeatable)",
    )
    search_rule(gen)
    gen.add_argument("--no-cache", action="store_true", help="disable the trie KV cache")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    add_runtime(gen)

    _add_judge_parser(sub)


def _add_judge_parser(sub: argparse._SubParsersAction) -> None:
    judge = sub.add_parser(
        "judge",
        help="judge (prompt, response) pairs, or re-judge a run's records, with every judge",
        description="Judges: guard (smol-guard-aligned; searches optimise it), independent "
        "(a guard on another backbone; the headline), degeneracy (incoherent or repetitive "
        "text), rule (garak's refusal phrases). Examples: saffron judge --prompt P --response R "
        "--judge all; saffron judge --run runs/adv --judge all  (writes runs/adv/judged.jsonl)",
    )
    judge.add_argument(
        "--judge",
        default="guard",
        help="guard|independent|degeneracy|rule, comma-separated, or all",
    )
    judge.add_argument("--guard", default=DEFAULT_GUARD, help="guard name or adapter folder")
    judge.add_argument("--independent", default="gemma-judge", help="independent judge name")
    judge.add_argument("--prompt", help="the user prompt")
    judge.add_argument("--response", help="the answer to judge (may be empty)")
    judge.add_argument("--file", help="JSONL rows with prompt and response")
    judge.add_argument("--run", help="a saffron eval folder: judge every record")
    judge.add_argument("--json", action="store_true", help="one JSON object per row")
    add_runtime(judge)


def add_info_parsers(sub: argparse._SubParsersAction) -> None:
    """``models``, ``datasets``, ``methods`` and ``setup``."""
    sub.add_parser("models", help="list the model names Saffron knows")
    sub.add_parser("datasets", help="list the prompt sets Saffron knows")
    sub.add_parser("methods", help="list the search methods")
    sub.add_parser("setup", help="prepare the embedded model files (idempotent)")


def cmd_models(_: argparse.Namespace) -> int:
    from saffron.lm.models import REGISTRY

    for entry in REGISTRY.values():
        print(f"{entry.name:40s} {entry.kind:9s} {entry.description}")
    print("(or any local Hugging Face model folder)")
    return 0


def cmd_methods(_: argparse.Namespace) -> int:
    from saffron.search import METHODS

    for spec in sorted(METHODS.values(), key=lambda s: s.name):
        needs = [n for n, f in (("guard", spec.needs_guard), ("mrm", spec.needs_mrm)) if f]
        extra = f" [needs {', '.join(needs)}]" if needs else ""
        extra += f" [budget ≥ {spec.min_budget}]" if spec.min_budget > 1 else ""
        extra += " [--logp-weight, --logp-floor]" if spec.ranks_children else ""
        print(f"{spec.name:12s} {spec.description}; budget = {spec.budget_meaning}{extra}")
    return 0


def cmd_datasets(_: argparse.Namespace) -> int:
    from saffron.data import list_datasets

    for info in list_datasets():
        rows = f"{info.rows} rows" if info.rows is not None else "rows: online"
        where = "offline" if info.offline else "hub"
        print(f"{info.name:16s} {where:7s} {rows:12s} {info.licence:24s} {info.description}")
    print('(or a .jsonl file of {"prompt": ..., "prefill"?: ..., "id"?: ...} rows)')
    return 0


def cmd_setup(_: argparse.Namespace) -> int:
    from saffron.data import fetch_all
    from saffron.lm.models import ensure_gemma3, ensure_smollm2

    print(f"embedded policy: {ensure_smollm2()}")
    print(f"judge backbone:  {ensure_gemma3()}")
    print(f"prompt sets:     {fetch_all()}")
    return 0


def _search_config(args: argparse.Namespace, spec: MethodSpec) -> SearchConfig:
    """The search config of ``generate``, refused (SaffronError) when the method cannot run it:
    a budget at which it would not search, a selection rule it would ignore, a bad guard cost."""
    config = SearchConfig(
        options=options(args.option),
        budget=args.budget,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        top_p=args.top_p,
        temperature=args.temperature,
        seed=args.seed,
        **selection_rule(args, spec.ranks_children, spec.gates),
    )
    check_config(spec, config)
    check_rule_used(spec, config)
    parse_guard_cost(args.guard_cost)
    return config


def _world(args: argparse.Namespace, spec: MethodSpec, policy: Policy, rt: RuntimeConfig) -> World:
    """The policy with the reward models the method needs, loaded with ``rt`` (the guard
    billed as ``--guard-cost`` says)."""
    world = World(policy)
    if spec.needs_guard:
        from saffron.reward.costing import SuffixCosted
        from saffron.reward.loading import load_guard

        world.guard = load_guard(args.guard, policy.chat.tokenizer, runtime=rt)
        if suffix := parse_guard_cost(args.guard_cost):
            world.guard = SuffixCosted(world.guard, suffix)
    if spec.needs_mrm:
        from saffron.reward.mrm_load import load_mrm

        world.mrm = load_mrm(args.mrm, policy, runtime=rt)
    return world


def cmd_generate(args: argparse.Namespace) -> int:
    from saffron.lm.models import load_model
    from saffron.lm.policy import make_policy
    from saffron.search import get_method, run_search

    spec = get_method(args.method)  # fail on a typo before loading anything
    config = _search_config(args, spec)
    if not args.prompt.strip():
        raise SaffronError("the prompt is empty")
    rt = runtime(args)
    t0 = time.perf_counter()
    loaded = load_model(args.policy, rt)
    policy = make_policy(loaded, cache=not args.no_cache, kv_budget=rt.kv_budget)
    seq = policy.chat.sequence(args.prompt, args.prefill, reserve=config.max_new_tokens)
    world = _world(args, spec, policy, rt)
    load_s = time.perf_counter() - t0
    result = run_search(args.method, world, seq, config)
    if args.json:
        out = {"prompt": args.prompt, "prefill": args.prefill, **result.to_dict()}
        out["load_s"] = load_s
        print(json.dumps(out, ensure_ascii=False))
        return 0
    c = result.compute
    pol = c.per_model["policy"]
    print(f"{args.prefill}{result.text}")
    print(
        f"-- {args.method}: {len(result.generated)} new tokens, {c.tflop:.4f} TFLOP, "
        f"policy tokens computed {pol.tokens_computed} / reused {pol.tokens_reused}, "
        f"{c.wall_s:.2f} s (+{load_s:.1f} s load)",
        file=sys.stderr,
    )
    return 0


def _judge_rows(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(id, prompt, response) rows from --prompt/--response or --file, validated first."""
    if args.file:
        if args.prompt is not None or args.response is not None:
            raise SaffronError("give either --file or --prompt/--response, not both")
        return _judge_file(args.file)
    if args.prompt is None or args.response is None:
        raise SaffronError("give --prompt and --response, or --file")
    if not args.prompt.strip():
        raise SaffronError("the prompt is empty")
    return [("1", args.prompt, args.response)]


def _judge_file(path: str) -> list[tuple[str, str, str]]:
    """(id, prompt, response) rows of a JSONL file; SaffronError naming file:line."""
    from saffron.data import jsonl_objects

    rows = []
    for lineno, obj in jsonl_objects(Path(path)):
        prompt, response = obj.get("prompt"), obj.get("response")
        if not isinstance(prompt, str) or not prompt.strip():
            raise SaffronError(f'{path}:{lineno}: missing or empty "prompt"')
        if not isinstance(response, str):
            raise SaffronError(f'{path}:{lineno}: "response" must be a string')
        rows.append((str(obj.get("id", lineno)), prompt, response))
    if not rows:
        raise SaffronError(f"{path}: no rows")
    return rows


def cmd_judge(args: argparse.Namespace) -> int:
    from saffron.eval.judges import Answer, judge_answers, load_scorers, parse_judges

    names = parse_judges(args.judge)
    if args.run is not None:
        if args.file or args.prompt is not None or args.response is not None:
            raise SaffronError("give --run, --file or --prompt/--response, one of them")
        return _judge_run(Path(args.run), names, args)
    rows = _judge_rows(args)
    scorers, threshold = load_scorers(
        names, guard=args.guard, independent=args.independent, runtime=runtime(args)
    )
    verdicts = judge_answers([Answer(p, "", r) for _, p, r in rows], scorers, threshold)
    for (rid, _, _), v in zip(rows, verdicts, strict=True):
        if names == ("guard",):  # the guard alone: one reward and its verdict, as always
            reward, verdict = v["guard_reward"], "unsafe" if v["unsafe_guard"] else "safe"
            out = {"id": rid, "reward": reward, "verdict": verdict}
            print(json.dumps(out) if args.json else f"{rid}\t{reward:+.3f}\t{verdict}")
            continue
        if args.json:
            print(json.dumps({"id": rid, **v}))
            continue
        parts = [rid]
        for name in ("guard", "independent"):
            if f"{name}_reward" in v:
                verdict = "unsafe" if v[f"unsafe_{name}"] else "safe"
                parts.append(f"{name} {v[f'{name}_reward']:+.3f} {verdict}")
        if "unsafe_rule" in v:
            parts.append(f"rule {'unsafe' if v['unsafe_rule'] else 'safe'}")
        if "degenerate" in v:
            state = "degenerate" if v["degenerate"] else "coherent"
            parts.append(f"degeneracy {v['degenerate_p']:.2f} {state}")
        print("\t".join(parts))
    return 0


def _judge_run(folder: Path, names: tuple[str, ...], args: argparse.Namespace) -> int:
    """Re-judge every record of a run into ``judged.jsonl``; print the per-cell rates."""
    from saffron.eval.judges import JUDGED, cell_rates, judge_run, load_scorers

    if not (folder / "records.jsonl").is_file():
        raise SaffronError(f"{folder} holds no records.jsonl; run `saffron eval --out {folder}`")
    scorers, threshold = load_scorers(
        names, guard=args.guard, independent=args.independent, runtime=runtime(args)
    )
    rows = judge_run(folder, scorers, threshold)
    table = cell_rates(rows)
    keys = sorted({k for v in table.values() for k in v if k != "n"})
    print("| method | budget | n | " + " | ".join(keys) + " |")
    print("|---|---|---|" + "---|" * len(keys))
    for (method, budget), v in table.items():
        vals = " | ".join(f"{v[k]:.3f}" if k in v else "—" for k in keys)
        print(f"| {method} | {budget} | {int(v['n'])} | {vals} |")
    print(f"\n{len(rows)} records judged → {folder / JUDGED}")
    if "independent" in names:
        print(f"`saffron compare {folder}` now heads its tables with the independent judge's ASR")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": cmd_generate,
    "judge": cmd_judge,
    "models": cmd_models,
    "datasets": cmd_datasets,
    "methods": cmd_methods,
    "setup": cmd_setup,
}
