"""No-defence decoding: greedy and sampling. The baselines every defence is compared with."""

from __future__ import annotations

from saffron.search.base import Outcome, SearchConfig, Steps, World, register
from saffron.search.decoding import decode_steps, generator
from saffron.types import TokenSequence


def _decode(world: World, seq: TokenSequence, cfg: SearchConfig, *, greedy: bool) -> Steps:
    gen = None if greedy else generator(cfg)
    (out,) = yield from decode_steps(world.policy, [seq], cfg, greedy=greedy, gen=gen)
    return Outcome(out)


@register("greedy", "no defence: greedy decoding", "ignored (always 1 answer)")
def greedy(world: World, seq: TokenSequence, cfg: SearchConfig) -> Steps:
    return _decode(world, seq, cfg, greedy=True)


@register("sample", "no defence: one sample (temperature, top-p)", "ignored (always 1 answer)")
def sample(world: World, seq: TokenSequence, cfg: SearchConfig) -> Steps:
    return _decode(world, seq, cfg, greedy=False)
