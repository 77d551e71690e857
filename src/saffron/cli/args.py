"""Argument types shared by the subcommands: each turns one command-line string into a value,
or into argparse's usage error (exit 2) naming the text, before anything runs; and the option
group the search-running subcommands share (:func:`search_rule`)."""

from __future__ import annotations

import argparse

from saffron.errors import SaffronError


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


def search_rule(p: argparse.ArgumentParser) -> None:
    """``--logp-weight``, ``--logp-floor`` (selection of saffron and beam; defaults from
    :class:`~saffron.search.base.SearchConfig`) and ``--guard-cost`` (how guard calls are
    billed, :mod:`saffron.reward.costing`)."""
    from saffron.reward.costing import DEFAULT_SUFFIX_TOKENS, READOUT
    from saffron.search.base import SearchConfig

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
        type=float,
        default=SearchConfig.logp_floor,
        metavar="NATS",
        help="saffron, beam: no child more than NATS below the policy's most probable token "
        f"(default {SearchConfig.logp_floor if SearchConfig.logp_floor is not None else 'none'})",
    )
    p.add_argument(
        "--guard-cost",
        default=READOUT,
        metavar="readout|suffix[:N]",
        help="bill each guard call as run (readout) or as a suffix guard would compute it, N "
        f"more positions per call (suffix: N = {DEFAULT_SUFFIX_TOKENS}, Llama Guard 3's "
        "closing instruction); an accounting model, answers unchanged",
    )
