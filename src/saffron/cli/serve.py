"""``saffron serve``: load the models once, then serve the OpenAI API with uvicorn, on loopback
unless told otherwise. Limits and defaults come from :class:`ServeSettings`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from saffron.cli.args import add_runtime, integer, names, runtime, search_rule, selection_rule
from saffron.errors import SaffronError
from saffron.lm.models import SMOLLM2
from saffron.reward.loading import DEFAULT_GUARD
from saffron.reward.mrm_load import SMOL_MRM
from saffron.search import World, get_method
from saffron.serve.engine import QUEUE_SIZE
from saffron.serve.protocol import ServeSettings

DEFAULT_POLICY = SMOLLM2
LOOPBACK = ("127.0.0.1", "::1", "localhost")

EPILOG = """examples:
  saffron serve                                   # embedded models on http://127.0.0.1:8000/v1
  SAFFRON_KEY=secret saffron serve --api-key-env SAFFRON_KEY --queue 16
  curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
       -d '{"model": "saffron", "messages": [{"role": "user", "content": "Hi"}]}'
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``serve``."""
    sv = sub.add_parser(
        "serve",
        help="an OpenAI-compatible HTTP server (chat, completions, models, metrics)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sv.add_argument("--policy", default=DEFAULT_POLICY, help="policy model name or folder")
    sv.add_argument("--guard", default=DEFAULT_GUARD, help="guard: guides searches, judges answers")
    sv.add_argument("--mrm", default=SMOL_MRM, help="MRM (loaded when a served method needs it)")
    sv.add_argument("--methods", default="", help="comma-separated model ids to serve (all)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    sv.add_argument("--port", type=integer, default=8000)
    sv.add_argument("--api-key-env", metavar="VAR", help="env variable holding the API key")
    sv.add_argument(
        "--max-concurrency", type=integer, default=4, metavar="K",
        help="requests answered together (greedy requests waiting together share a batch)",
    )  # fmt: skip
    sv.add_argument(
        "--queue", type=integer, default=QUEUE_SIZE, metavar="N", help="waiting requests (429)"
    )
    add_runtime(sv)
    _add_limits(sv)
    search_rule(sv, guard_cost=False)
    sv.add_argument(
        "--world-factory", metavar="MODULE:FUNCTION",
        help="build the models with FUNCTION() -> saffron.search.World instead of loading "
        "--policy/--guard/--mrm (custom models; the tests use tiny ones)",
    )  # fmt: skip


def _add_limits(sv: argparse.ArgumentParser) -> None:
    """The request limits and defaults of :class:`ServeSettings`."""
    d = ServeSettings
    sv.add_argument(
        "--max-tokens-limit", type=integer, default=d.max_tokens_limit, help="largest max_tokens"
    )
    sv.add_argument(
        "--default-max-tokens",
        type=integer,
        default=d.default_max_tokens,
        help="when none is given",
    )
    sv.add_argument(
        "--min-tokens", type=integer, default=d.min_tokens, help="stop tokens forbidden before"
    )
    sv.add_argument(
        "--budget", type=integer, default=d.default_budget, help="default search budget"
    )
    sv.add_argument(
        "--max-budget", type=integer, default=d.max_budget, help="largest saffron.budget"
    )
    sv.add_argument(
        "--max-body-bytes", type=integer, default=d.max_body_bytes, help="request size limit"
    )


def _settings(args: argparse.Namespace) -> ServeSettings:
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env, "")
        if not key:
            raise SaffronError(f"--api-key-env: the variable {args.api_key_env} is unset or empty")
    methods = names(args.methods)
    for m in methods:
        get_method(m)
    return ServeSettings(
        api_key=key,
        max_body_bytes=args.max_body_bytes,
        max_tokens_limit=args.max_tokens_limit,
        default_max_tokens=min(args.default_max_tokens, args.max_tokens_limit),
        min_tokens=args.min_tokens,
        default_budget=args.budget,
        max_budget=args.max_budget,
        methods=methods,
        # the command line's rule, for every method that uses it (rule_for hands each its part)
        rule=tuple(selection_rule(args, ranks_children=True, gates=True).items()),
    )


def _factory(spec: str) -> Callable[[], World]:
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise SaffronError(f"--world-factory expects MODULE:FUNCTION, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise SaffronError(f"--world-factory {spec!r}: {err}") from err
    return fn


def load_world(args: argparse.Namespace, methods: tuple[str, ...]) -> World:
    """Policy, guard (always: it judges every answer) and the MRM when a method needs it."""
    from saffron.lm.models import load_model
    from saffron.lm.policy import make_policy
    from saffron.reward.loading import load_guard
    from saffron.search import METHODS

    rt = runtime(args)
    policy = make_policy(load_model(args.policy, rt), kv_budget=rt.kv_budget)
    guard = load_guard(args.guard, policy.chat.tokenizer, runtime=rt)
    world = World(policy, guard=guard)
    if any(METHODS[m].needs_mrm for m in methods or tuple(METHODS)):
        from saffron.reward.mrm_load import load_mrm

        world.mrm = load_mrm(args.mrm, policy, runtime=rt)
    return world


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from saffron.serve.app import create_app
    from saffron.serve.engine import Engine
    from saffron.serve.protocol import model_ids

    settings = _settings(args)
    if args.queue < 1 or args.max_concurrency < 1:
        raise SaffronError("--queue and --max-concurrency must be ≥ 1")
    if args.host not in LOOPBACK and settings.api_key is None:
        print(f"saffron: warning: serving on {args.host} without an API key", file=sys.stderr)
    if args.world_factory:
        world = _factory(args.world_factory)()
    else:
        world = load_world(args, settings.methods)
    engine = Engine(world, queue_size=args.queue, max_batch=args.max_concurrency)
    app = create_app(engine, settings)
    ids = ", ".join(model_ids(world, settings))
    print(f"saffron serve: http://{args.host}:{args.port}/v1  models: {ids}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"serve": cmd_serve}
