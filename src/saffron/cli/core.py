"""Subcommands that answer and judge one prompt, and list or prepare what Saffron knows:
``generate``, ``judge``, ``models``, ``datasets``, ``methods``, ``setup``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from saffron.cli.args import add_runtime, integer, options, runtime
from saffron.errors import SaffronError
from saffron.lm.models import ALIGNED
from saffron.reward.loading import SMOL_GUARD
from saffron.reward.mrm_load import SMOL_MRM
from saffron.search import SearchConfig

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
    gen.add_argument("--guard", default=SMOL_GUARD, help="guard for methods that need one")
    gen.add_argument("--mrm", default=SMOL_MRM, help="MRM for methods that need one")
    gen.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, e.g. children=4, lookahead=8, conservative=false (repeatable)",
    )
    gen.add_argument("--no-cache", action="store_true", help="disable the trie KV cache")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    add_runtime(gen)

    judge = sub.add_parser("judge", help="score (prompt, response) pairs with a safety guard")
    judge.add_argument("--guard", default=SMOL_GUARD, help="guard name or adapter folder")
    judge.add_argument("--prompt", help="the user prompt")
    judge.add_argument("--response", help="the answer to judge (may be empty)")
    judge.add_argument("--file", help="JSONL rows with prompt and response")
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
    from saffron.lm.models import ensure_smollm2

    print(f"embedded policy: {ensure_smollm2()}")
    print(f"prompt sets:     {fetch_all()}")
    return 0


def _search_config(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(
        options=options(args.option),
        budget=args.budget,
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        top_p=args.top_p,
        temperature=args.temperature,
        seed=args.seed,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    from saffron.lm.models import load_model
    from saffron.lm.policy import make_policy
    from saffron.search import World, get_method, run_search

    spec = get_method(args.method)  # fail on a typo before loading anything
    config = _search_config(args)
    if not args.prompt.strip():
        raise SaffronError("the prompt is empty")
    rt = runtime(args)
    t0 = time.perf_counter()
    loaded = load_model(args.policy, rt)
    policy = make_policy(loaded, cache=not args.no_cache, kv_budget=rt.kv_budget)
    seq = policy.chat.sequence(args.prompt, args.prefill, reserve=config.max_new_tokens)
    world = World(policy)
    if spec.needs_guard:
        from saffron.reward.loading import load_guard

        world.guard = load_guard(args.guard, policy.chat.tokenizer, runtime=rt)
    if spec.needs_mrm:
        from saffron.reward.mrm_load import load_mrm

        world.mrm = load_mrm(args.mrm, policy, runtime=rt)
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
    from saffron.reward.loading import load_guard
    from saffron.types import TokenSequence

    rows = _judge_rows(args)
    guard = load_guard(args.guard, None, runtime=runtime(args))
    tok = guard.backend.loaded.tokenizer

    def enc(text: str) -> tuple[int, ...]:
        return tuple(tok.encode(text, add_special_tokens=False))

    seqs = [TokenSequence((), enc(p), (), (), enc(r)) for _, p, r in rows]
    rewards = guard.score(seqs).tolist()
    for (rid, _, _), reward in zip(rows, rewards, strict=True):
        verdict = "unsafe" if reward < 0 else "safe"
        if args.json:
            print(json.dumps({"id": rid, "reward": reward, "verdict": verdict}))
        else:
            print(f"{rid}\t{reward:+.3f}\t{verdict}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "generate": cmd_generate,
    "judge": cmd_judge,
    "models": cmd_models,
    "datasets": cmd_datasets,
    "methods": cmd_methods,
    "setup": cmd_setup,
}
