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

**Ablation switches.** ``cfg.option("conservative")`` (default True) turns the unseen mask
off; ``cfg.top_p`` sets the children (1.0 = every token); trie sharing is a property of the
backends, not of the search: build the policy and MRM on a ``PlainBackend``
(``make_policy(loaded, cache=False)``) to run the same search without prefix sharing — the
answers are the same, only ``compute`` changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from saffron.lm.policy import Policy, top_p_set
from saffron.reward.base import MultifurcationRM
from saffron.search.base import SearchConfig, SearchResult, World, register
from saffron.search.common import (
    Node,
    best,
    bool_option,
    make_result,
    measured,
    rank_key,
    require_mrm,
)
from saffron.search.decoding import is_finished, policy_logits
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


def expand(policy: Policy, live: Sequence[Node], cfg: SearchConfig) -> Children:
    """Top-p children of every live beam, from one batched policy call."""
    logits = policy_logits(policy, [b.seq for b in live], cfg).cpu() / cfg.temperature  # (U, V)
    logprobs = torch.log_softmax(logits, dim=-1)
    parents, tokens = [], []
    for u in range(len(live)):
        toks = top_p_set(logits[u], cfg.top_p)
        toks = toks[torch.isfinite(logits[u, toks])]  # a forbidden stop token is no child
        parents.append(torch.full_like(toks, u))
        tokens.append(toks)
    parent, token = torch.cat(parents), torch.cat(tokens)
    reward = torch.full(parent.shape, float("-inf"))
    return Children(parent, token, logprobs[parent, token], reward)


def score(
    mrm: MultifurcationRM, policy: Policy, live: Sequence[Node], ch: Children, conservative: bool
) -> Children:
    """Read every child's reward from ONE MRM call per live beam (batched; paper Eq. 3, 7)."""
    rewards = mrm.rewards([b.seq for b in live], conservative=conservative)  # (U, V)
    expected = (len(live), policy.vocab_size)
    assert tuple(rewards.shape) == expected, f"MRM returned {tuple(rewards.shape)}, not {expected}"
    return Children(ch.parent, ch.token, ch.logp, rewards.float().cpu()[ch.parent, ch.token])


def _ranked(ch: Children) -> Tensor:
    """Row order of ``ch`` by reward, then log-probability, both descending."""
    by_logp = torch.argsort(-ch.logp, stable=True)
    return by_logp[torch.argsort(-ch.reward[by_logp], stable=True)]


def _fallback(live: Sequence[Node], ch: Children) -> Children:
    """Each live beam's most probable child, carrying the beam's own reward (see module doc)."""
    rows = []
    for u in range(len(live)):
        mine = torch.nonzero(ch.parent == u).squeeze(-1)
        if mine.numel():
            rows.append(int(mine[torch.argmax(ch.logp[mine])]))
    out = ch.take(torch.tensor(rows, dtype=torch.long))
    inherited = torch.tensor([live[u].reward for u in out.parent.tolist()], dtype=torch.float32)
    return Children(out.parent, out.token, out.logp, inherited)


def select(
    policy: Policy, cfg: SearchConfig, pool: Sequence[Node], live: Sequence[Node], ch: Children
) -> tuple[list[Node], bool]:
    """The next pool: the N best of the finished sequences and the scored children (Eq. 2).

    Returns the pool, best first, and whether the all-unseen fallback was used.
    """
    finite = torch.isfinite(ch.reward)
    fell_back = not bool(finite.any())
    ch = _fallback(live, ch) if fell_back else ch.take(torch.nonzero(finite).squeeze(-1))
    top = _ranked(ch)[: cfg.budget]  # more than N children can never be needed
    children = []
    for i in top.tolist():
        parent = live[int(ch.parent[i])]
        seq = parent.seq.extend(int(ch.token[i]))
        logp = parent.logp + float(ch.logp[i])
        finished = is_finished(seq, policy, cfg)
        children.append(Node(seq, float(ch.reward[i]), logp, finished))
    candidates = [b for b in pool if b.finished] + children
    return sorted(candidates, key=rank_key, reverse=True)[: cfg.budget], fell_back


@register(
    "saffron",
    "Saffron-1: MRM-guided search, top-p children, global top-N by MRM reward",
    "beam width N (sequences kept per step)",
    needs_mrm=True,
)
def saffron(world: World, seq: TokenSequence, cfg: SearchConfig) -> SearchResult:
    """Run Saffron-1 from ``seq`` (nothing generated yet). Calls the MRM, never the guard.

    ``result.reward`` is the MRM's estimate for the answer (None when it never saw one);
    ``extra["beams_per_step"]`` lists how many unfinished beams were scored at each step — the
    MRM's ``calls`` grow by exactly their sum.
    """
    mrm = require_mrm(world, "saffron")
    conservative = bool_option(cfg, "conservative", True)
    policy = world.policy
    trace: list[int] = []
    fallback_steps = 0
    with measured(world) as meter:
        pool = [Node(seq)]
        while live := [b for b in pool if not b.finished]:
            children = score(mrm, policy, live, expand(policy, live, cfg), conservative)
            pool, fell_back = select(policy, cfg, pool, live, children)
            trace.append(len(live))
            fallback_steps += fell_back
        answer = best(pool)
    extra = {
        "reward_source": "mrm",
        "conservative": conservative,
        "top_p": cfg.top_p,
        "steps": len(trace),
        "beams_per_step": trace,
        "fallback_steps": fallback_steps,
        "final_pool": len(pool),
    }
    return make_result(world, "saffron", answer, meter, extra)
