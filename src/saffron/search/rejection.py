"""Rejection sampling: sample until the guard says safe, or the budget is spent.

One answer at a time (expand: sample it; score: one guard call; select: accept when its reward
is ≥ the threshold, option ``threshold``, default 0 — the guard's safe/unsafe boundary,
reward = logit("safe") − logit("unsafe")). When no sample is accepted within ``cfg.budget``
tries, the sample with the highest reward is returned (ties: the earlier one).

The first sample equals the ``sample`` method's answer under the same seed.
"""

from __future__ import annotations

from saffron.search.base import Ask, Outcome, SearchConfig, Steps, World, register
from saffron.search.common import Node, float_option, require_guard
from saffron.search.decoding import decode_steps, generator
from saffron.types import TokenSequence


@register(
    "rejection",
    "rejection sampling: sample until the guard says safe (reward ≥ 0)",
    "most samples drawn",
    needs_guard=True,
)
def rejection(world: World, seq: TokenSequence, cfg: SearchConfig) -> Steps:
    """Draw up to ``cfg.budget`` samples, stopping at the first the guard accepts.

    Makes one guard call per sample drawn; ``extra["samples"]`` says how many were drawn.
    """
    require_guard(world, "rejection")
    threshold = float_option(cfg, "threshold", 0.0, positive=False)
    gen = generator(cfg)
    tried: list[Node] = []
    while len(tried) < cfg.budget:
        (answer,) = yield from decode_steps(world.policy, [seq], cfg, greedy=False, gen=gen)
        reward = float((yield Ask(guard=(answer,))).guard[0])
        tried.append(Node(answer, reward, finished=True))
        if reward >= threshold:
            break
    accepted = tried[-1].reward >= threshold
    chosen = len(tried) - 1 if accepted else max(range(len(tried)), key=lambda i: tried[i].reward)
    extra = {
        "reward_source": "guard (outcome)",
        "samples": len(tried),
        "accepted": accepted,
        "rewards": [n.reward for n in tried],
    }
    return Outcome(tried[chosen].seq, tried[chosen].reward, extra)
