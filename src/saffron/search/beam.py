"""Reward-balanced beam search with the guard as a process reward (Rebase style).

Rebase (Wu et al. 2024, "Inference Scaling Laws", arXiv 2408.00724) expands the nodes of a
search tree in proportion to the softmax of their process rewards, so promising partial answers
get more children and poor ones are pruned. Here a step is one token. With width w =
``cfg.budget`` and k = option ``children`` (default 4), one step reads expand → score → select:

* **expand** — the w·k expansions of the step are allocated across the frontier by
  ``round(w·k · softmax(r / τ))`` (τ = option ``rebase_temperature``, default 1; largest
  remainder rounding so the counts sum to exactly w·k); a node allotted 0 is pruned. A node
  allotted n draws n children independently from the policy (temperature, top-p; stop tokens
  forbidden before min_new_tokens). The first step gives all w·k to the prompt.
* **score** — every child is scored by the guard as a process reward on its partial answer:
  one guard call per child (paper, "why tree search loses": K PRM calls per node). Children
  drawn twice are scored twice, as the paper counts; a trie-cached guard computes them once.
* **select** — the w best distinct children by reward (then policy log-probability) survive;
  those that are finished (stop token or max_new_tokens) are set aside as completed answers and
  each shrinks the width, as in Rebase (w·k then means (w − completed)·k).

The search stops when the width is used up by completed answers or no unfinished node
survives; the answer is the completed one with the highest guard reward.

**Staying on the policy's distribution** (our extension, as for Saffron;
:mod:`saffron.search.common`): with ``cfg.logp_weight`` = β > 0 a node's score is its guard
reward + β·log π(generated), and that score replaces the reward in the allocation, the
selection and the choice of the answer; with ``cfg.logp_floor`` = δ, children are drawn only
from tokens at most δ nats below the policy's most probable token. β = 0 and no floor is
Rebase's rule.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import replace

import torch

from saffron.lm.policy import Policy
from saffron.search.base import Ask, Outcome, Reply, SearchConfig, Steps, World, register
from saffron.search.common import (
    Node,
    best,
    child,
    float_option,
    int_option,
    rank_key,
    require_guard,
    score,
    within_floor,
)
from saffron.search.decoding import forbid_stop, generator, sample_tokens
from saffron.types import TokenSequence


def allocate(rewards: Sequence[float], total: int, tau: float) -> list[int]:
    """Rebase's allocation: ``total`` expansions split by softmax(rewards / τ), summing exactly.

    Largest-remainder rounding; equal remainders go to the earlier node. Nodes with reward −∞
    get weight 0 unless every node has −∞ (then the split is uniform).
    """
    r = torch.tensor(list(rewards), dtype=torch.float64)
    finite = torch.isfinite(r)
    weights = torch.softmax(r / tau, 0) if bool(finite.any()) else torch.full_like(r, 1 / len(r))
    raw = weights * total
    counts = torch.floor(raw).long()
    short = total - int(counts.sum())
    order = torch.argsort(-(raw - counts), stable=True)
    counts[order[:short]] += 1
    return counts.tolist()


def expand(
    policy: Policy,
    frontier: Sequence[Node],
    counts: Sequence[int],
    cfg: SearchConfig,
    gen: torch.Generator,
) -> Generator[Ask, Reply, list[Node]]:
    """Sample ``counts[i]`` children of ``frontier[i]``; one batched policy call.

    A child's ``logp`` adds its token's log-probability (at the temperature, before top-p and
    the floor) to its parent's. With ``cfg.logp_floor`` set, tokens below the floor are never
    drawn."""
    parents = [(node, n) for node, n in zip(frontier, counts, strict=True) if n > 0]
    seqs = [node.seq for node, _ in parents]
    logits = forbid_stop((yield Ask(logits=tuple(seqs))).logits, seqs, policy, cfg)  # (F, V)
    logprobs = torch.log_softmax(logits / cfg.temperature, dim=-1)
    floor = None if cfg.logp_floor is None else within_floor(logprobs, cfg.logp_floor)
    children = []
    for i, (node, n) in enumerate(parents):
        keep = None if floor is None else floor[i].expand(n, -1)
        for tok in sample_tokens(logits[i].expand(n, -1), cfg, gen, keep):
            children.append(child(policy, cfg, node, tok, float(logprobs[i, tok])))
    return children


def judge(children: Sequence[Node]) -> Generator[Ask, Reply, list[Node]]:
    """Process reward of each child's partial answer: one guard call per child."""
    rewards = (yield Ask(guard=tuple(c.seq for c in children))).guard  # (C,)
    return [replace(c, reward=float(r)) for c, r in zip(children, rewards.tolist(), strict=True)]


def select(
    children: Sequence[Node], width: int, weight: float = 0.0, cap: float | None = None
) -> tuple[list[Node], list[Node]]:
    """The ``width`` best distinct children by score (β = ``weight``, τ = ``cap``), split into
    (unfinished frontier, finished)."""
    kept: list[Node] = []
    seen: set[tuple[int, ...]] = set()
    for c in sorted(children, key=lambda n: rank_key(n, weight, cap), reverse=True):
        if c.seq.generated not in seen and len(kept) < width:
            seen.add(c.seq.generated)
            kept.append(c)
    return [c for c in kept if not c.finished], [c for c in kept if c.finished]


@register(
    "beam",
    "Rebase-style reward-balanced beam search, guard as process reward (1 call per child)",
    "beam width w (w·k children scored per step, k = option children)",
    needs_guard=True,
    ranks_children=True,
)
def beam(world: World, seq: TokenSequence, cfg: SearchConfig) -> Steps:
    """Run reward-balanced beam search from ``seq``.

    ``extra["children_per_step"]`` lists the children scored at each step (guard calls); it is
    k·(w − completed) every step, so w·k while no answer has completed.
    """
    require_guard(world, "beam")
    k = int_option(cfg, "children", 4, 1)
    tau = float_option(cfg, "rebase_temperature", 1.0)
    gen = generator(cfg)
    frontier: list[Node] = [Node(seq)]
    completed: list[Node] = []
    per_step: list[int] = []
    weight = cfg.logp_weight
    while frontier and (width := cfg.budget - len(completed)) > 0:
        scores = [score(n.reward, n.logp, weight, cfg.reward_cap) for n in frontier]
        counts = allocate(scores, k * width, tau)
        children = yield from expand(world.policy, frontier, counts, cfg, gen)
        children = yield from judge(children)
        frontier, done = select(children, width, weight, cfg.reward_cap)
        completed += done
        per_step.append(len(children))
    answer = best(completed or frontier, weight, cfg.reward_cap)
    extra = {
        "reward_source": "guard (process)",
        "children": k,
        "steps": len(per_step),
        "children_per_step": per_step,
        "completed": len(completed),
        **({} if cfg.paper_selection else {"selection": cfg.selection()}),
    }
    return Outcome(answer.seq, answer.reward, extra)
