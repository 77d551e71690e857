"""Best-of-N: the outcome-reward baseline (paper, "Inference scaling for safety").

expand → score → select, once: sample N = ``cfg.budget`` full answers in one batched decode
(identical prompts share their prefix in a trie-cached policy, so the prompt is computed once);
score each answer once with the guard as an outcome reward (exactly N guard calls); keep the
answer with the highest reward. Ties go to the earlier sample.

``extra["rewards"]`` holds all N rewards in sample order, so accuracy at any smaller N can be
read off one run afterwards (the search-and-learn way of drawing budget curves).
"""

from __future__ import annotations

import torch

from saffron.search.base import Ask, Outcome, SearchConfig, Steps, World, register
from saffron.search.common import require_guard
from saffron.search.decoding import decode_steps, generator
from saffron.types import TokenSequence


@register(
    "best-of-n",
    "Best-of-N: N samples, each scored once by the guard (outcome reward), best kept",
    "N samples",
    needs_guard=True,
)
def best_of_n(world: World, seq: TokenSequence, cfg: SearchConfig) -> Steps:
    """Sample ``cfg.budget`` answers, return the one the guard scores highest.

    Makes exactly ``cfg.budget`` guard calls. With budget 1 the answer is the ``sample``
    method's answer (same seed, same generator stream).
    """
    require_guard(world, "best-of-n")
    samples = yield from decode_steps(
        world.policy, [seq] * cfg.budget, cfg, greedy=False, gen=generator(cfg)
    )
    rewards = (yield Ask(guard=tuple(samples))).guard  # (N,) outcome rewards
    pick = int(torch.argmax(rewards))  # first maximum
    extra = {"reward_source": "guard (outcome)", "rewards": rewards.tolist(), "chosen": pick}
    return Outcome(samples[pick], float(rewards[pick]), extra)
