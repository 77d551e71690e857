"""What the reward-guided methods share: a search node, ranking, world checks, option parsing.

Ranking rule used everywhere: a node is better when its reward (the estimate the search saw) is
higher; equal rewards are broken by the policy's log-probability of the generated tokens. The
order of a Python list never decides which answer is returned (the released Saffron code
returned the first element of an unsorted list — paper notes, "Known flaws").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

from saffron.errors import SaffronError
from saffron.lm.policy import Policy
from saffron.lm.vocab import check_policy_vocabulary
from saffron.reward.base import Guard, MultifurcationRM
from saffron.search.base import SearchConfig, World, missing
from saffron.search.decoding import is_finished
from saffron.types import TokenSequence

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Node:
    """One candidate answer in a search.

    ``reward`` is the reward the search saw for it (−∞ when none yet); ``logp`` the policy's
    log-probability of ``seq.generated`` (tie-break only); ``finished`` whether it ends in a stop
    token or reached max_new_tokens (:func:`saffron.search.decoding.is_finished`).
    """

    seq: TokenSequence
    reward: float = NEG_INF
    logp: float = 0.0
    finished: bool = False


def rank_key(node: Node) -> tuple[float, float]:
    """Sort key, higher is better: reward, then the policy's log-probability."""
    return (node.reward, node.logp)


def best(nodes: Iterable[Node]) -> Node:
    """The best node: finished ones first, then by :func:`rank_key`. ``nodes`` must be non-empty."""
    return max(nodes, key=lambda n: (n.finished, *rank_key(n)))


def child(policy: Policy, cfg: SearchConfig, parent: Node, token: int, logp: float) -> Node:
    """``parent`` extended by ``token`` whose policy log-probability is ``logp`` (no reward)."""
    seq = parent.seq.extend(int(token))
    return Node(seq, NEG_INF, parent.logp + logp, is_finished(seq, policy, cfg))


# --- world checks ---------------------------------------------------------------------------


def require_guard(world: World, method: str) -> Guard:
    """The world's guard, or SaffronError (the message of :func:`~saffron.search.base.missing`)."""
    if world.guard is None:
        raise missing(method, "guard")
    return cast(Guard, world.guard)


def require_mrm(world: World, method: str) -> MultifurcationRM:
    """The world's MRM, checked to score the policy's vocabulary (paper: an MRM is tied to the
    policy's tokenizer, its output is indexed by the policy's token ids)."""
    if world.mrm is None:
        raise missing(method, "mrm")
    mrm = cast(MultifurcationRM, world.mrm)
    name = str(getattr(mrm, "name", "?"))
    check_policy_vocabulary(
        name, int(mrm.vocab_size), int(world.policy.vocab_size), policy=world.policy.name
    )
    return mrm


# --- options --------------------------------------------------------------------------------


def int_option(cfg: SearchConfig, key: str, default: int, minimum: int) -> int:
    """``cfg.option(key)`` as an int ≥ ``minimum``; SaffronError otherwise."""
    value = cfg.option(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SaffronError(f"option {key!r} must be an integer ≥ {minimum}, got {value!r}")
    return value


def float_option(cfg: SearchConfig, key: str, default: float, *, positive: bool = True) -> float:
    """``cfg.option(key)`` as a finite float (> 0 when ``positive``); SaffronError otherwise."""
    value = cfg.option(key, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        need = "a finite number > 0" if positive else "a finite number"
        raise SaffronError(f"option {key!r} must be {need}, got {value!r}")
    return float(value)


def bool_option(cfg: SearchConfig, key: str, default: bool) -> bool:
    value = cfg.option(key, default)
    if not isinstance(value, bool):
        raise SaffronError(f"option {key!r} must be true or false, got {value!r}")
    return value
