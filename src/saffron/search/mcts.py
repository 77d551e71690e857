"""Lookahead tree search scored by the guard, in the style of DeAL.

DeAL (Huang et al. 2024, "DeAL: Decoding-time Alignment for Large Language Models",
arXiv 2402.06147) treats decoding as heuristic search: at each step the policy's most probable
tokens are the candidate actions, and each is judged by the alignment reward of a *lookahead*
continuation, since a reward model cannot judge a single token well. The Saffron-1 paper runs it
as its MCTS baseline. Our version, one decision at a time (expand → score → select):

* **expand** — the k = option ``children`` (default 4) most probable tokens of the policy's
  top-p set after the committed prefix (stop tokens forbidden before min_new_tokens).
* **score** — ``cfg.budget`` simulations per decision. A simulation picks a candidate by UCT —
  every candidate once first (most probable first, batched), then
  argmax Q(a) + c·sqrt(ln n / n(a)) with c = option ``exploration`` (default 1; rewards are in
  guard-logit units) — samples a rollout of up to L = option ``lookahead`` (default 8) tokens
  after it from the policy, and scores the rollout with the guard (one guard call). Q(a) is the
  mean rollout reward.
* **select** — commit the candidate with the best Q (ties: more visits, then more probable):
  option ``chunk`` (default 1) tokens of its best rollout, starting with the candidate token.

**Budget ≥ 2, children ≥ 2.** Every candidate is simulated once, most probable first, before
UCT compares any; with one simulation per decision only the most probable token is ever tried,
and the committed token is the policy's argmax: greedy decoding, billed for a rollout and a
guard call per token (measured on the embedded world: budget 1 returned greedy's answers on
100 of 100 prompts at 5.5× its compute). So budget 1 is refused, as is ``children`` 1 (one
candidate is greedy at any budget). At budget b < k only the b most probable candidates are
simulated.

The tree is one level deep and is rebuilt after each commit (values of deeper nodes are not
carried over); a search makes ``cfg.budget`` guard calls per decision. It stops when the
committed answer is finished (stop token or max_new_tokens). The reward reported is Q of the
last committed candidate — with ``chunk`` 1 that candidate is the finished answer itself, so
every rollout of it is the answer and Q is the guard's outcome reward of the answer.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace

import torch

from saffron.lm.policy import Policy
from saffron.search.base import Ask, Outcome, Reply, SearchConfig, Steps, World, register
from saffron.search.common import (
    NEG_INF,
    Node,
    child,
    float_option,
    int_option,
    require_guard,
)
from saffron.search.decoding import decode_steps, forbid_stop, generator, is_finished, top_p_mask
from saffron.types import TokenSequence


@dataclass(frozen=True)
class Options:
    children: int
    lookahead: int
    exploration: float
    chunk: int

    @classmethod
    def of(cls, cfg: SearchConfig) -> Options:
        return cls(
            children=int_option(cfg, "children", 4, 2),  # one candidate: greedy decoding
            lookahead=int_option(cfg, "lookahead", 8, 0),
            exploration=float_option(cfg, "exploration", 1.0),
            chunk=int_option(cfg, "chunk", 1, 1),
        )


@dataclass
class Arm:
    """One candidate token of the current decision and its simulation statistics (mutable)."""

    node: Node  # committed prefix + the candidate token
    prior: float  # policy probability of the token
    visits: int = 0
    total: float = 0.0
    best_rollout: Node | None = None

    @property
    def value(self) -> float:
        """Q(a): mean rollout reward; −∞ before the first visit."""
        return self.total / self.visits if self.visits else NEG_INF

    def record(self, rollout: TokenSequence, reward: float) -> None:
        self.visits += 1
        self.total += reward
        if self.best_rollout is None or reward > self.best_rollout.reward:
            self.best_rollout = Node(rollout, reward)


def expand(
    policy: Policy, node: Node, cfg: SearchConfig, k: int
) -> Generator[Ask, Reply, list[Arm]]:
    """The ``k`` most probable tokens of the policy's top-p set after ``node``."""
    raw = (yield Ask(logits=(node.seq,))).logits
    logits = forbid_stop(raw, [node.seq], policy, cfg)[0] / cfg.temperature  # (V,)
    logprobs = torch.log_softmax(logits, dim=-1)
    kept = top_p_mask(logits[None], cfg.top_p)[0] & torch.isfinite(logits)
    cand = torch.nonzero(kept).squeeze(-1)
    toks = cand[torch.argsort(-logits[cand], stable=True)][:k]  # most probable first
    return [
        Arm(child(policy, cfg, node, t, float(logprobs[t])), math.exp(float(logprobs[t])))
        for t in toks.tolist()
    ]


def uct(arms: Sequence[Arm], c: float) -> int:
    """Index of the arm to simulate next: an unvisited arm first, else the UCT maximiser."""
    for i, arm in enumerate(arms):
        if arm.visits == 0:
            return i
    n = sum(a.visits for a in arms)
    return max(
        range(len(arms)),
        key=lambda i: arms[i].value + c * math.sqrt(math.log(n) / arms[i].visits),
    )


def simulate(
    world: World,
    arms: Sequence[Arm],
    cfg: SearchConfig,
    opts: Options,
    gen: torch.Generator,
) -> Generator[Ask, Reply, None]:
    """One rollout per arm (batched), each scored by one guard call; updates the arms."""
    depth = len(arms[0].node.seq.generated)  # siblings share their length
    horizon = min(cfg.max_new_tokens, depth + opts.lookahead)
    look = replace(cfg, max_new_tokens=horizon, min_new_tokens=min(cfg.min_new_tokens, horizon))
    seqs = [a.node.seq for a in arms]
    rollouts = yield from decode_steps(world.policy, seqs, look, greedy=False, gen=gen)
    rewards = (yield Ask(guard=tuple(rollouts))).guard.tolist()  # (len(arms),)
    for arm, rollout, reward in zip(arms, rollouts, rewards, strict=True):
        arm.record(rollout, float(reward))


def decide(
    world: World, node: Node, cfg: SearchConfig, opts: Options, gen: torch.Generator
) -> Generator[Ask, Reply, Arm]:
    """Run ``cfg.budget`` simulations from ``node``; return the arm to commit."""
    arms = yield from expand(world.policy, node, cfg, opts.children)
    first = arms[: cfg.budget]  # every arm once, most probable first, in one batch
    yield from simulate(world, first, cfg, opts, gen)
    for _ in range(cfg.budget - len(first)):
        yield from simulate(world, [arms[uct(arms, opts.exploration)]], cfg, opts, gen)
    return max(arms, key=lambda a: (a.value, a.visits, a.prior))


def commit(policy: Policy, cfg: SearchConfig, node: Node, arm: Arm, chunk: int) -> Node:
    """Advance ``node`` by ``chunk`` tokens of the arm's best rollout (its first is the arm's)."""
    assert arm.best_rollout is not None, "an arm is committed only after a simulation"
    generated = arm.best_rollout.seq.generated[: len(node.seq.generated) + chunk]
    seq = node.seq.with_generated(generated)
    return Node(seq, arm.value, 0.0, is_finished(seq, policy, cfg))


@register(
    "mcts",
    "DeAL-style lookahead tree search: UCT over top-k tokens, rollouts scored by the guard",
    "simulations (guard calls) per token decision",
    needs_guard=True,
    min_budget=2,
    min_budget_why="with one simulation per decision only the policy's most probable token is "
    "ever tried, which is greedy decoding billed for a rollout per token",
)
def mcts(world: World, seq: TokenSequence, cfg: SearchConfig) -> Steps:
    """Decode ``seq`` one decision at a time, each decided by ``cfg.budget`` scored rollouts."""
    require_guard(world, "mcts")
    opts = Options.of(cfg)
    gen = generator(cfg)
    node, decisions = Node(seq), 0
    while not node.finished:
        arm = yield from decide(world, node, cfg, opts, gen)
        node = commit(world.policy, cfg, node, arm, opts.chunk)
        decisions += 1
    extra = {
        "reward_source": "guard (lookahead rollouts)",
        "decisions": decisions,
        "simulations_per_decision": cfg.budget,
        **{f"option_{k}": v for k, v in vars(opts).items()},
    }
    return Outcome(node.seq, node.reward, extra)
