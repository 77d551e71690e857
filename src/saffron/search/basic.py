"""No-defence decoding: greedy and sampling. The baselines every defence is compared with."""

from __future__ import annotations

from saffron.search.base import SearchConfig, SearchResult, World, metered, register
from saffron.search.decoding import decode_batch, ended_by_eos, generator
from saffron.types import TokenSequence


def _decode(
    method: str, world: World, seq: TokenSequence, cfg: SearchConfig, *, greedy: bool
) -> SearchResult:
    with metered(world) as compute:
        gen = None if greedy else generator(cfg)
        out = decode_batch(world.policy, [seq], cfg, greedy=greedy, gen=gen)[0]
    return SearchResult(
        method=method,
        sequence=out,
        text=world.policy.chat.decode(out.generated),
        reward=None,
        finished=ended_by_eos(out, world.policy),
        compute=compute,
    )


@register("greedy", "no defence: greedy decoding", "ignored (always 1 answer)")
def greedy(world: World, seq: TokenSequence, cfg: SearchConfig) -> SearchResult:
    return _decode("greedy", world, seq, cfg, greedy=True)


@register("sample", "no defence: one sample (temperature, top-p)", "ignored (always 1 answer)")
def sample(world: World, seq: TokenSequence, cfg: SearchConfig) -> SearchResult:
    return _decode("sample", world, seq, cfg, greedy=False)
