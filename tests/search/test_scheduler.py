"""The scheduler: many searches stepped together give exactly the answers, rewards, compute
and reward-model calls of one-at-a-time runs from a cleared cache, with one call per model per
step; searches join and leave between steps."""

from __future__ import annotations

import pytest
import torch
from search_toys import Models

from saffron.errors import SaffronError
from saffron.lm.backend import PlainBackend, TrieBackend
from saffron.lm.policy import make_policy
from saffron.reward.guard import ReadoutGuard
from saffron.reward.mrm import MRM, Layout
from saffron.search import METHODS, SearchConfig, SearchResult, World, run_search
from saffron.search.scheduler import Scheduler
from saffron.types import TokenSequence

PROMPTS = ["How do I stay safe?", "Tell me a story", "abc", "What is 2+2? Explain."]


def real_world(models: Models, *, cache: bool = True) -> World:
    """The tiny policy with a real readout guard and a real MRM (every number is computed)."""
    policy = make_policy(models.policy, cache=cache)
    tok = models.policy.tokenizer

    def backend(which):  # type: ignore[no-untyped-def]
        return TrieBackend(which) if cache else PlainBackend(which)

    guard = ReadoutGuard(
        backend(models.guard), name="g", policy_tokenizer=tok, safe_word="s", unsafe_word="u"
    )
    vocab = policy.vocab_size
    unseen = torch.zeros(vocab, dtype=torch.bool)
    unseen[100:140] = True
    mrm = MRM(
        backend(models.mrm),
        name="m",
        layout=Layout((1, 9), (2, 9)),
        bias=torch.linspace(-1, 1, vocab),
        unseen=unseen,
    )
    return World(policy, guard=guard, mrm=mrm)


def jobs(world: World) -> list[tuple[int, str, TokenSequence, SearchConfig]]:
    """Every registered method on several prompts, seeds and budgets (saffron and beam also
    under a selection rule with a log-probability term and a floor)."""
    out = []
    for i, method in enumerate(sorted(METHODS)):
        for j, text in enumerate(PROMPTS[:2] if method in ("beam", "mcts") else PROMPTS):
            seq = world.policy.chat.sequence(text, prefill="Ok" if j % 2 else "")
            spec = METHODS[method]
            budget = max(spec.min_budget, 1 + (i + j) % 3)
            rule: dict[str, float] = {}
            if spec.ranks_children and j:
                rule = {"logp_weight": 0.3, "logp_floor": 2.0, "no_repeat_ngram": 2}
            if spec.gates and j >= 2:
                rule["gate"] = 0.0  # the toy MRM's rewards straddle 0: some open late
            cfg = SearchConfig(
                budget=budget, max_new_tokens=5, min_new_tokens=2, seed=i * 10 + j, **rule
            )
            out.append((len(out), method, seq, cfg))
    return out


def alone(world: World, method: str, seq: TokenSequence, cfg: SearchConfig) -> SearchResult:
    for b in world.backends().values():
        b.clear()
    return run_search(method, world, seq, cfg)


def close(a: object, b: object, where: str = "") -> None:
    """Equal, except floats from model outputs (rewards), which may differ by the rounding of
    a row computed in a batch of another shape: relative 1e-5."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6), where
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def same(a: SearchResult, b: SearchResult) -> None:
    """Same answer tokens, text, compute (tokens, FLOPs, calls, forwards) and reward calls."""
    da, db = a.to_dict(), b.to_dict()
    da["compute"].pop("wall_s"), db["compute"].pop("wall_s")
    assert da["tokens"] == db["tokens"] and da["compute"] == db["compute"]
    close(da, db)


@pytest.mark.parametrize("cache, stems", [(True, False), (False, False), (True, True)])
def test_many_searches_equal_one_at_a_time(models: Models, cache: bool, stems: bool) -> None:
    """``stems``: the trie backends share stems in every forward where rows share a past
    (:mod:`saffron.lm.stem`; on the tiny model's short sequences they otherwise never pay)."""
    world = real_world(models, cache=cache)
    for b in world.backends().values():
        b.stem_min_bytes = 0 if stems else b.stem_min_bytes
    todo = jobs(world)
    expected = {k: alone(world, m, s, c) for k, m, s, c in todo}
    for b in world.backends().values():
        b.clear()
    sched = Scheduler(world, max_searches=5)
    for k, m, s, c in todo:
        sched.submit(k, m, s, c)
    got = {f.key: f.result for f in sched.run()}
    assert set(got) == set(expected)
    for k in expected:
        result = got[k]
        assert result is not None
        same(result, expected[k])


def test_one_call_per_model_per_step(models: Models) -> None:
    world = real_world(models)
    todo = [j for j in jobs(world) if j[1] in ("saffron", "best-of-n", "greedy", "sample")]
    sched = Scheduler(world, max_searches=len(todo))
    for k, m, s, c in todo:
        sched.submit(k, m, s, c)
    backends = world.backends()
    total = dict.fromkeys(backends, 0)
    while not sched.idle:
        before = {r: b.compute.calls for r, b in backends.items()}
        sched.step()
        for r, b in backends.items():
            assert b.compute.calls - before[r] <= 1  # one call per model for all searches
            total[r] += b.compute.calls - before[r]
    assert total["mrm"] >= 1 and total["guard"] >= 1
    alone_calls = sum(alone(world, *job[1:]).compute.per_model["policy"].calls for job in todo)
    assert total["policy"] <= sched.steps_run < alone_calls / 3


def test_searches_join_when_places_free(models: Models) -> None:
    world = real_world(models)
    seq = world.policy.chat.sequence("hi")
    sched = Scheduler(world, max_searches=2)
    for k, n in enumerate([2, 6, 3]):  # the third joins when the first leaves
        sched.submit(k, "greedy", seq, SearchConfig(max_new_tokens=n, min_new_tokens=n))
    order, live = [], []
    while not sched.idle:
        order += [f.key for f in sched.step()]
        live.append(sched.live)
    assert order == [0, 2, 1]
    assert max(live) == 2


def test_failures_are_per_search(models: Models) -> None:
    world = real_world(models)
    seq = world.policy.chat.sequence("hi")
    sched = Scheduler(world, max_searches=4)
    cfg = SearchConfig(max_new_tokens=3, min_new_tokens=0)
    sched.submit("bad", "beam", seq, SearchConfig(options=(("children", 0),)))
    sched.submit("good", "greedy", seq, cfg)
    out = {f.key: f for f in sched.run()}
    assert isinstance(out["bad"].error, SaffronError) and out["bad"].result is None
    assert out["good"].result is not None and out["good"].error is None
    with pytest.raises(SaffronError, match="unknown method"):
        sched.submit("x", "nope", seq, cfg)
    with pytest.raises(SaffronError, match="needs a guard"):
        Scheduler(World(world.policy)).submit("x", "best-of-n", seq, cfg)
