"""Saffron-1 (Qiu et al. 2025): tree search guided by a multifurcation reward model (MRM).

The search keeps a pool of at most N = ``cfg.budget`` sequences. One step (paper Eq. 2, 3, 7;
notes "The search (Saffron-1), one step") reads as expand → score → select:

* **expand** — one batched policy call over every unfinished beam s; its children are the
  policy's top-p set (p = ``cfg.top_p``, paper 0.8) at ``cfg.temperature``; stop tokens are
  forbidden before ``min_new_tokens`` (their logit is −∞, so they are never children).
* **score** — one MRM call per unfinished beam, all batched in ``mrm.rewards(live)``: row s
  estimates the guard's reward R(s·a) of every next token a (Eq. 3). With the conservative mask
  on, tokens unseen in the MRM's training data score −∞ (Eq. 7) and are never picked.
* **select** — the next pool is the N best among all (s, a) children of all beams *and* the
  finished sequences already in the pool (Eq. 2): a finished answer stays until N better
  candidates push it out.

The search stops when every sequence in the pool is finished (stop token or max_new_tokens).
The answer is the best finished sequence by the reward the search saw (the MRM's estimate when
its last token was chosen), ties broken by policy log-probability; never by list order.

**When the MRM rules out everything.** If every child of every unfinished beam scores −∞
(all unseen), no candidate has an estimate. Rather than stop with nothing, each such beam is
extended by its most probable policy token and keeps its own reward (greedy decoding until the
MRM sees a scoreable child again). ``extra["fallback_steps"]`` counts such steps.

**Staying on the policy's distribution** (our extension; :mod:`saffron.search.common`). With
``cfg.logp_weight`` = β > 0 the select step ranks candidates by MRM reward + β·log π(generated)
instead of the reward alone, and with ``cfg.logp_floor`` = δ the expand step drops children more
than δ nats below their beam's most probable token. Both read the log-probabilities off the
logits of the policy call the step already made. β = 0 and no floor is the paper's rule.

**Repeats and the gate** (our extensions). With ``cfg.no_repeat_ngram`` = n no child repeats an
n-gram of the answer (:func:`~saffron.search.decoding.repeats`; the token's logit is −∞ before
the top-p set is taken). With ``cfg.gate`` = τ the search first follows the policy: its most
probable child is the whole pool until the MRM scores ``cfg.gate_steps`` of them in a row below
τ; the search then runs as above from the beam before the first of them (:class:`Gate`).

**The final pool** (``cfg.option("keep_pool")``, default False): ``extra["pool"]`` lists every
sequence of the last pool, best first, as ``{"tokens": generated ids, "reward": the MRM's
estimate}``: the states the search reached, which the MRM's training data may lack (a learned
reward queried off its training distribution; see :mod:`saffron.train.visited`).

**Ablation switches.** ``cfg.option("conservative")`` (default True) turns the unseen mask
off; ``cfg.top_p`` sets the children (1.0 = every token); trie sharing is a property of the
backends, not of the search: build the policy and MRM on a ``PlainBackend``
(``make_policy(loaded, cache=False)``) to run the same search without prefix sharing — the
answers are the same, only ``compute`` changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from saffron.lm.policy import Policy
from saffron.reward.base import RewardRows
from saffron.search.base import Ask, Outcome, SearchConfig, Steps, World, register
from saffron.search.common import (
    Node,
    best,
    bool_option,
    rank_key,
    require_mrm,
)
from saffron.search.decoding import forbid_stop_, is_finished, nucleus
from saffron.types import TokenSequence


@dataclass(frozen=True)
class Children:
    """The children of the live beams, flattened: M rows, all CPU tensors of shape (M,).

    ``parent`` indexes the live beams, ``token`` is the appended token, ``logp`` the policy's
    log-probability of that token, ``reward`` the MRM's estimate of R(s·a) (−∞ until scored).
    """

    parent: Tensor
    token: Tensor
    logp: Tensor
    reward: Tensor

    def take(self, idx: Tensor) -> Children:
        return Children(self.parent[idx], self.token[idx], self.logp[idx], self.reward[idx])


def expand(policy: Policy, live: Sequence[Node], logits: Tensor, cfg: SearchConfig) -> Children:
    """Top-p children of every live beam from the policy's logits (U, V) of the live beams.

    One batched top-p over all beams; a stop token forbidden before min_new_tokens (−∞) is
    no child, nor, with ``cfg.logp_floor`` = δ, a token more than δ nats below its beam's most
    probable one. Children are listed beam by beam, token ids ascending. The nucleus comes
    as index pairs (:func:`nucleus`): no (U, V) mask is built or scanned.
    """
    scaled = forbid_stop_(logits / cfg.temperature, [b.seq for b in live], policy, cfg)  # (U, V)
    logprobs = torch.log_softmax(scaled, dim=-1)
    parent, token = nucleus(scaled, cfg.top_p)
    logp = logprobs[parent, token]
    if cfg.logp_floor is not None:
        top = logprobs.max(dim=-1).values  # (U,)
        near = logp >= top[parent] - cfg.logp_floor  # within_floor at the children
        parent, token, logp = parent[near], token[near], logp[near]
    reward = torch.full(parent.shape, float("-inf"))
    return Children(parent, token, logp, reward)


def score(rewards: RewardRows, ch: Children) -> Children:
    """Every child's reward read off the MRM's vectors (U, V) of the live beams: one MRM call
    per live beam (paper Eq. 3; unseen tokens −∞ under the conservative mask, Eq. 7). Only
    the children's entries are read (and, for an MRM with a linear head, computed)."""
    assert ch.parent.numel() == 0 or int(ch.parent.max()) < len(rewards), (
        f"MRM returned {len(rewards)} rows for children of {int(ch.parent.max()) + 1} beams"
    )
    return Children(ch.parent, ch.token, ch.logp, rewards.at(ch.parent, ch.token))


def _ranked(ch: Children, live: Sequence[Node], weight: float, cap: float | None = None) -> Tensor:
    """Row order of ``ch`` by score, then log-probability, both descending.

    The score is the reward when β = ``weight`` is 0 and there is no cap (Eq. 2), else
    min(reward, τ = ``cap``) + β·log π of the child's whole generated sequence (its beam's
    log-probability plus its token's), computed in float64 as
    :func:`~saffron.search.common.score` computes it for a :class:`Node`; with a cap, ties
    (every child at or above τ) go to the most probable whole sequence.
    """
    by_logp = torch.argsort(-ch.logp, stable=True)
    key = ch.reward
    if weight or cap is not None:
        parent_logp = torch.tensor([b.logp for b in live], dtype=torch.float64)  # (U,)
        logp = parent_logp[ch.parent] + ch.logp.double()  # (M,) log π(s·a)
        reward = ch.reward.double()
        if cap is not None:
            reward = reward.clamp(max=cap)
            by_logp = torch.argsort(-logp, stable=True)
        key = reward + weight * logp if weight else reward
    return by_logp[torch.argsort(-key[by_logp], stable=True)]


def _fallback(live: Sequence[Node], ch: Children) -> Children:
    """Each live beam's most probable child, carrying the beam's own reward (see module doc)."""
    # rows sorted by log-probability (descending, stable), then by parent (stable): the first
    # row of each parent is its most probable child (the earliest one on ties)
    by_logp = torch.argsort(-ch.logp, stable=True)
    order = by_logp[torch.argsort(ch.parent[by_logp], stable=True)]
    parents = ch.parent[order]
    first = torch.ones_like(parents, dtype=torch.bool)
    first[1:] = parents[1:] != parents[:-1]
    out = ch.take(order[first])
    inherited = torch.tensor([live[u].reward for u in out.parent.tolist()], dtype=torch.float32)
    return Children(out.parent, out.token, out.logp, inherited)


def select(
    policy: Policy, cfg: SearchConfig, pool: Sequence[Node], live: Sequence[Node], ch: Children
) -> tuple[list[Node], bool]:
    """The next pool: the N best of the finished sequences and the scored children (Eq. 2;
    ranked by score, see :func:`_ranked`).

    Returns the pool, best first, and whether the all-unseen fallback was used.
    """
    weight = cfg.logp_weight
    finite = torch.isfinite(ch.reward)
    fell_back = not bool(finite.any())
    ch = _fallback(live, ch) if fell_back else ch.take(torch.nonzero(finite).squeeze(-1))
    top = _ranked(ch, live, weight, cfg.reward_cap)[
        : cfg.budget
    ]  # more than N children can never be needed
    children = []
    for i in top.tolist():
        parent = live[int(ch.parent[i])]
        seq = parent.seq.extend(int(ch.token[i]))
        logp = parent.logp + float(ch.logp[i])
        finished = is_finished(seq, policy, cfg)
        children.append(Node(seq, float(ch.reward[i]), logp, finished))
    candidates = [b for b in pool if b.finished] + children
    ranked = sorted(candidates, key=lambda n: rank_key(n, weight, cfg.reward_cap), reverse=True)
    return ranked[: cfg.budget], fell_back


def run_after(run: int, reward: float, tau: float) -> int:
    """The gate's run of followed children below τ after one more with MRM ``reward``: one
    longer below τ, 0 at or above it, unchanged for an unseen token (−∞: no estimate)."""
    if not math.isfinite(reward):
        return run
    return run + 1 if reward < tau else 0


class Gate:
    """The gate (``cfg.gate`` = τ, ``cfg.gate_steps`` = k; our extension): follow the policy
    until the MRM predicts its own answer unsafe, then search from where that began.

    The paper searches from the first token. On a request the policy already answers safely,
    a search that maximises a safety reward still moves the answer: a refusal's opening
    outscores a helpful one (the rerun's over-refusal). The gate leaves such answers as the
    policy's own and spends the search where the policy's choice is predicted unsafe (an
    attacked answer).

    While following, the pool is one beam, extended each step by the policy's most probable
    child. The gate opens when the MRM scores k followed children in a row below τ; the
    search then starts from the beam *before* the first of them (the prefix is cached, so the
    rewind costs one step's forward), not after k unsafe tokens. A child the MRM has no
    estimate for (an unseen token, −∞ under the conservative mask, Eq. 7) neither counts nor
    breaks a run: the MRM was trained on answers to harmful requests, and much of a benign
    answer's vocabulary is unseen by it. A single dip is noise of a learned reward (its fit,
    BENCHMARKS.md), hence k.
    """

    def __init__(self, cfg: SearchConfig, root: Node) -> None:
        assert cfg.gate is not None
        self.tau, self.k = cfg.gate, cfg.gate_steps
        self.path = [root]  # the followed beams, root first
        self.run_start: int | None = None  # index in path of the beam before the run
        self.run = 0
        self.opened_at: int | None = None  # new tokens of the beam the search started from

    def follow(self, policy: Policy, cfg: SearchConfig, ch: Children) -> list[Node] | None:
        """The next pool while following: [the policy's most probable child], or [the beam
        the search starts from] when the gate opens now; None once it is open."""
        if self.opened_at is not None:
            return None
        here = self.path[-1]
        top = int(torch.argmax(ch.logp))  # first of equals: the lowest token id
        reward = float(ch.reward[top])
        run = run_after(self.run, reward, self.tau)
        if run == 1 and self.run == 0:
            self.run_start = len(self.path) - 1
        self.run = run
        if run >= self.k:
            assert self.run_start is not None
            start = self.path[self.run_start]
            self.opened_at = len(start.seq.generated)
            return [start]
        seq = here.seq.extend(int(ch.token[top]))
        node = Node(seq, reward, here.logp + float(ch.logp[top]), is_finished(seq, policy, cfg))
        self.path.append(node)
        return [node]


@register(
    "saffron",
    "Saffron-1: MRM-guided search, top-p children, global top-N by MRM reward",
    "beam width N (sequences kept per step)",
    needs_mrm=True,
    ranks_children=True,
    gates=True,
)
def saffron(world: World, seq: TokenSequence, cfg: SearchConfig) -> Steps:
    """Run Saffron-1 from ``seq`` (nothing generated yet). Calls the MRM, never the guard.

    ``result.reward`` is the MRM's estimate for the answer (None when it never saw one);
    ``extra["searched_from"]`` (with a gate) is how many new tokens the beam had where the
    search started (:class:`Gate`), None when the policy's own answer passed the gate;
    ``extra["beams_per_step"]`` lists how many unfinished beams were scored at each step — the
    MRM's ``calls`` grow by exactly their sum; ``extra["children_scored"]`` counts the
    children among which the steps chose (each beam's top-p set: one MRM call judges them all).
    Each step asks the policy and the MRM about the same live beams at once (the MRM scores s,
    not its children), so a driver runs both in one step.
    """
    require_mrm(world, "saffron")
    conservative = bool_option(cfg, "conservative", True)
    keep_pool = bool_option(cfg, "keep_pool", False)
    policy = world.policy
    trace: list[int] = []
    fallback_steps = children_scored = 0
    pool = [Node(seq)]
    gate = None if cfg.gate is None else Gate(cfg, pool[0])
    while live := [b for b in pool if not b.finished]:
        seqs = tuple(b.seq for b in live)
        reply = yield Ask(logits=seqs, mrm=seqs, conservative=conservative)
        children = score(reply.mrm, expand(policy, live, reply.logits, cfg))
        followed = None if gate is None else gate.follow(policy, cfg, children)
        if followed is not None:
            pool, fell_back = followed, False
        else:
            pool, fell_back = select(policy, cfg, pool, live, children)
        trace.append(len(live))
        fallback_steps += fell_back
        children_scored += int(children.token.numel())
    answer = best(pool, cfg.logp_weight, cfg.reward_cap)
    extra: dict[str, Any] = {
        "reward_source": "mrm",
        "conservative": conservative,
        "top_p": cfg.top_p,
        "steps": len(trace),
        "beams_per_step": trace,
        "fallback_steps": fallback_steps,
        "final_pool": len(pool),
        "children_scored": children_scored,
        **({} if cfg.paper_selection else {"selection": cfg.selection()}),
        **({} if gate is None else {"searched_from": gate.opened_at}),
    }
    if keep_pool:
        extra["pool"] = [{"tokens": list(b.seq.generated), "reward": b.reward} for b in pool]
    return Outcome(answer.seq, answer.reward, extra)
