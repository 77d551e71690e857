"""Argument types shared by the subcommands: each turns one command-line string into a value,
or into argparse's usage error (exit 2) naming the text, before anything runs; and the option
groups the subcommands share: the search rule (:func:`search_rule`), the runtime
(:func:`add_runtime`) and Ray (:func:`add_ray`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from saffron.cluster import ClusterConfig
from saffron.errors import SaffronError
from saffron.runtime import RuntimeConfig, dtype_name


def integer(text: str) -> int:
    """An integer, or a usage error naming the text."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def unit(text: str) -> float:
    """A number in [0, 1], or a usage error naming the text."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def names(text: str) -> tuple[str, ...]:
    """Comma-separated names, blanks dropped: ``"a, b,"`` → ``("a", "b")``."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def budgets(text: str) -> tuple[int, ...]:
    """Comma-separated integers such as ``1,2,4``, or a usage error."""
    try:
        return tuple(int(x) for x in names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"budgets must be integers like 1,2,4, got {text!r}"
        ) from None


def shard(text: str) -> tuple[int, int]:
    """``K/N`` with 0 ≤ K < N, as (K, N), or a usage error."""
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 0 <= K < N, got {text!r}")
    return int(k), int(n)


def options(items: list[str]) -> tuple[tuple[str, object], ...]:
    """``KEY=VALUE`` strings (``--option``) as typed options: int, float, true/false, else
    text. SaffronError for an item without ``=`` or a key."""
    out: list[tuple[str, object]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SaffronError(f"--option expects KEY=VALUE, got {item!r}")
        out.append((key.strip(), _typed(raw)))
    return tuple(out)


def _typed(raw: str) -> object:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            continue
    return raw


def method_budgets(text: str) -> tuple[str, tuple[int, ...]]:
    """``METHOD=B1,B2`` (``--method-budgets``) as (method, budgets); SaffronError otherwise."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip():
        raise SaffronError(f"--method-budgets expects METHOD=B1,B2, got {text!r}")
    try:
        return name.strip(), budgets(values)
    except argparse.ArgumentTypeError as err:
        raise SaffronError(str(err)) from None


_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def byte_size(text: str) -> int:
    """Bytes as ``2147483648``, ``512M``, ``2G`` or ``1.5GiB`` (powers of 1024), or a usage
    error naming the text."""
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in _UNITS else (raw, "")
    try:
        value = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size in bytes such as 512M or 2G, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return int(value)


def positive(text: str) -> int:
    """An integer ≥ 1, or a usage error naming the text."""
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {text!r}")
    return value


def dtype(text: str) -> str:
    """A dtype name (``float32``, ``bfloat16``/``bf16``, ``float16``/``fp16``), canonical."""
    try:
        return dtype_name(text)
    except SaffronError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_runtime(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--dtype``, ``--kv-budget`` and ``--threads``: where and how the command's
    models run (:class:`saffron.runtime.RuntimeConfig`, whose defaults these are)."""
    d = RuntimeConfig
    group = parser.add_argument_group("runtime")
    group.add_argument("--device", default=d.device, help="cpu | cuda | cuda:N | mps")
    group.add_argument(
        "--dtype", type=dtype, default=d.dtype, help="float32 | bfloat16 | float16 (bf16, fp16)"
    )
    group.add_argument(
        "--kv-budget",
        type=byte_size,
        default=d.kv_budget,
        metavar="BYTES",
        help="bytes of each model's trie KV cache, transient buffers included (e.g. 512M, 4G; "
        "default 2G)",
    )
    group.add_argument(
        "--threads", type=positive, default=d.threads, help="torch CPU threads (default: torch's)"
    )


def runtime(args: argparse.Namespace, *, here: bool = True) -> RuntimeConfig:
    """The :class:`~saffron.runtime.RuntimeConfig` of ``args`` (see :func:`add_runtime`).

    ``here``: the models run in this process, so a device this machine lacks is refused now
    (one line, exit 2) and the threads are applied; False when they run elsewhere (Ray
    workers, which check for themselves)."""
    cfg = RuntimeConfig(
        device=args.device, dtype=args.dtype, kv_budget=args.kv_budget, threads=args.threads
    )
    if here:
        cfg.apply()
    return cfg


def add_ray(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``, ``--ray-workers``, ``--ray-cpus`` and ``--ray-gpus``
    (:class:`saffron.cluster.ClusterConfig`)."""
    d = ClusterConfig
    group = parser.add_argument_group("ray")
    group.add_argument(
        "--ray",
        nargs="?",
        const=d.address,
        default=None,
        metavar="ADDRESS",
        help="run the models on Ray workers: local (start one on this machine, the default), "
        "auto (RAY_ADDRESS or `ray start` here), HOST:PORT or ray://HOST:PORT; needs "
        "pip install 'saffron[ray]'",
    )
    group.add_argument(
        "--ray-workers", type=positive, default=d.workers, metavar="N", help="model-holding workers"
    )
    group.add_argument("--ray-cpus", type=float, default=d.cpus, help="CPUs per worker")
    group.add_argument(
        "--ray-gpus",
        type=float,
        default=None,
        help="GPUs per worker (default: 1 with --device cuda, else 0)",
    )


def cluster(args: argparse.Namespace) -> ClusterConfig | None:
    """The :class:`ClusterConfig` of ``--ray …`` (None without ``--ray``); SaffronError for a
    malformed address."""
    if args.ray is None:
        return None
    gpus = args.ray_gpus
    if gpus is None:
        gpus = 1.0 if args.device.startswith("cuda") else 0.0
    return ClusterConfig(args.ray, workers=args.ray_workers, cpus=args.ray_cpus, gpus=gpus)


OFF = "none"
"""The word that turns a setting of the selection rule off (``--logp-floor none``, …)."""


def none_or(kind: type[int] | type[float], what: str) -> Callable[[str], float | int | str]:
    """An argparse type: a ``kind`` number, or ``none`` (the setting off)."""

    def parse(text: str) -> float | int | str:
        if text.strip().lower() == OFF:
            return OFF
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} or 'none', got {text!r}") from None

    return parse


def _resolve(value: Any, default: Any, used: bool) -> Any:
    """An option of the selection rule: as given (``none``: None), else ``default`` where a
    method uses it, else None."""
    if value is None:
        return default if used else None
    return None if value == OFF else value


def selection_rule(args: argparse.Namespace, ranks_children: bool, gates: bool) -> dict[str, Any]:
    """The selection rule a command runs, as :class:`~saffron.search.base.SearchConfig`
    fields: each option as given (``none``: off), else the command line's default where a
    method uses it (:data:`~saffron.search.base.CLI_LOGP_FLOOR`, ``CLI_NO_REPEAT_NGRAM``,
    ``CLI_GATE`` and ``CLI_GATE_STEPS``, chosen on the validation split), else off."""
    from saffron.search.base import CLI_GATE, CLI_GATE_STEPS, CLI_LOGP_FLOOR, CLI_NO_REPEAT_NGRAM

    gate = _resolve(args.gate, CLI_GATE, gates)
    return {
        "logp_weight": args.logp_weight,
        "logp_floor": _resolve(args.logp_floor, CLI_LOGP_FLOOR, ranks_children),
        "reward_cap": args.reward_cap,
        "no_repeat_ngram": _resolve(args.no_repeat_ngram, CLI_NO_REPEAT_NGRAM, ranks_children),
        "gate": gate,
        "gate_steps": 1 if gate is None else _resolve(args.gate_steps, CLI_GATE_STEPS, True),
    }


def search_rule(p: argparse.ArgumentParser, *, guard_cost: bool = True) -> None:
    """``--logp-weight``, ``--logp-floor`` (selection of saffron and beam; defaults from
    :class:`~saffron.search.base.SearchConfig`) and, unless ``guard_cost`` is False (a command
    that runs no guard), ``--guard-cost`` (how guard calls are billed,
    :mod:`saffron.reward.costing`)."""
    from saffron.reward.costing import DEFAULT_SUFFIX_TOKENS, READOUT
    from saffron.search.base import CLI_LOGP_FLOOR, SearchConfig

    weight, paper = SearchConfig.logp_weight, ": reward alone, the paper's rule"
    p.add_argument(
        "--logp-weight",
        type=float,
        default=SearchConfig.logp_weight,
        metavar="BETA",
        help="saffron, beam: rank children by reward + BETA·log π(answer so far) "
        f"(default {weight}{paper if weight == 0 else ''})",
    )
    p.add_argument(
        "--logp-floor",
        type=none_or(float, "a number of nats"),
        default=None,
        metavar="NATS|none",
        help="saffron, beam: no child more than NATS below the policy's most probable token "
        f"(default {CLI_LOGP_FLOOR:g}, chosen on the validation split; none: no floor, the "
        "paper's rule)",
    )
    _search_extensions(p)
    if not guard_cost:
        return
    p.add_argument(
        "--guard-cost",
        default=READOUT,
        metavar="readout|suffix[:N]",
        help="bill each guard call as run (readout) or as a suffix guard would compute it, N "
        f"more positions per call (suffix: N = {DEFAULT_SUFFIX_TOKENS}, Llama Guard 3's "
        "closing instruction); an accounting model, answers unchanged",
    )


def _search_extensions(p: argparse.ArgumentParser) -> None:
    """``--reward-cap`` (default off), ``--no-repeat-ngram`` and ``--gate`` (the command line's
    defaults, resolved by :func:`selection_rule`): our extensions of the selection."""
    from saffron.search.base import CLI_GATE, CLI_GATE_STEPS, CLI_NO_REPEAT_NGRAM, SearchConfig

    p.add_argument(
        "--reward-cap",
        type=float,
        default=SearchConfig.reward_cap,
        metavar="TAU",
        help="saffron, beam: a reward above TAU counts as TAU, so among children safe enough "
        "the policy's most probable wins (satisficing; default none: maximise the reward)",
    )
    p.add_argument(
        "--no-repeat-ngram",
        type=none_or(int, "an n-gram length"),
        default=None,
        metavar="N|none",
        help="saffron, beam: no child that repeats an N-gram of the answer (default "
        f"{CLI_NO_REPEAT_NGRAM}, chosen on the validation split; none: no ban, the paper's)",
    )
    p.add_argument(
        "--gate",
        type=none_or(float, "a reward"),
        default=None,
        metavar="TAU|none",
        help="saffron: follow the policy's most probable token until the MRM scores K of them "
        f"in a row below TAU, then search from before the first (default {CLI_GATE:g}, chosen "
        "on the validation split; none: search from the first token, the paper's)",
    )
    p.add_argument(
        "--gate-steps",
        type=int,
        default=None,
        metavar="K",
        help=f"K of --gate (default {CLI_GATE_STEPS})",
    )
