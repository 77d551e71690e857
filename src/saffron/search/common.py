"""What the reward-guided methods share: a search node, ranking, world checks, option parsing.

**Ranking rule** used everywhere: a node is better when its *score* is higher; equal scores are
broken by the policy's log-probability of the generated tokens. The order of a Python list
never decides which answer is returned (the released Saffron code returned the first element of
an unsorted list — paper notes, "Known flaws").

The score is the reward the search saw (paper Eq. 2: the MRM's estimate for Saffron, the
guard's process reward for beam search), plus, when ``cfg.logp_weight`` = β > 0, β times the
policy's log-probability of the node's generated tokens:

    score(y) = R̂(x, y) + β · log π(y | x),   log π(y | x) = Σ_t log π(y_t | x, y_<t)

This is KL-regularised selection as in controlled decoding (Mudgal et al. 2024, "Controlled
Decoding from Language Models", arXiv 2310.17022): the policy that maximises
E[R] − β·KL(π' ‖ π) is π'(y) ∝ π(y)·exp(R(y)/β), whose log is, up to a constant, score / β.
The reward models here are trained on the policy's own text and overrate text far off it
(degenerate repetition); the log-probability term makes a candidate pay for each improbable
token it needs.

*Sum, not mean.* The term is the **sum** over the generated tokens. Between two candidates the
tokens they share cancel, so comparing sums compares exactly the log-probability of the tokens
each generated since their branch point — what a KL penalty charges. A mean would depend on the
shared prefix and would not be a KL term, and it lets a long answer dilute one very improbable
token (the one that leaves the distribution) among many probable ones. The candidates of one
step have the same length, so the sum does not favour length there; a finished answer that
competes with longer children is favoured by the log-probability its rivals' extra tokens
cost, as the regularised objective over complete answers wants. Prefill and prompt tokens are
not part of it (they are the same for every candidate). Log-probabilities are those of the
distribution the children come from (after the temperature, before top-p truncation), read off
the logits of the forward the step already ran: no extra forward.

With ``cfg.logp_floor`` = δ, a token more than δ nats below the policy's most probable token
at the same position is no child (:func:`within_floor`): a hard version of the same idea,
relative to the best sibling so that it adapts to flat and peaked distributions alike.
β = 0 and no floor is the paper's rule, and the code then computes exactly what it did before
the term existed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor

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
    log-probability of ``seq.generated`` (the sum over its tokens; the tie-break, and the KL
    term of the score when β > 0); ``finished`` whether it ends in a stop token or reached
    max_new_tokens (:func:`saffron.search.decoding.is_finished`).
    """

    seq: TokenSequence
    reward: float = NEG_INF
    logp: float = 0.0
    finished: bool = False


def score(reward: float, logp: float, weight: float, cap: float | None = None) -> float:
    """min(reward, τ) + β·logp (module doc); exactly ``reward`` when β = 0 and no cap τ."""
    if cap is not None:
        reward = min(reward, cap)
    return reward + weight * logp if weight else reward


def rank_key(node: Node, weight: float = 0.0, cap: float | None = None) -> tuple[float, float]:
    """Sort key, higher is better: the score under β = ``weight`` and τ = ``cap``, then the
    policy's log-probability (which alone orders the children a cap makes equal)."""
    return (score(node.reward, node.logp, weight, cap), node.logp)


def best(nodes: Iterable[Node], weight: float = 0.0, cap: float | None = None) -> Node:
    """The best node: finished ones first, then by :func:`rank_key`. ``nodes`` must be non-empty."""
    return max(nodes, key=lambda n: (n.finished, *rank_key(n, weight, cap)))


def within_floor(logprobs: Tensor, floor: float | None) -> Tensor:
    """Bool (B, V): the tokens whose log-probability in ``logprobs`` (B, V) is at most
    ``floor`` nats below their row's most probable token (all True when ``floor`` is None).

    The most probable token of a row is always kept, so no row loses every child."""
    if floor is None:
        return torch.ones_like(logprobs, dtype=torch.bool)
    return logprobs >= logprobs.max(dim=-1, keepdim=True).values - floor


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
