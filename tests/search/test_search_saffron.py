"""Saffron-1 search: known optimum, one MRM call per unfinished beam per step, answer selection
by reward (never list order), the conservative mask and its all-unseen fallback."""

from __future__ import annotations

import pytest
from search_toys import EOS, TablePolicy, ToyMRM, frac_reward

from saffron.errors import SaffronError
from saffron.lm.backend import PlainBackend
from saffron.lm.policy import make_policy
from saffron.search import SearchConfig, run_search
from saffron.search.base import World
from saffron.search.decoding import is_finished
from saffron.search.saffron import saffron
from saffron.types import TokenSequence


@pytest.fixture
def table(ids: dict[str, int]) -> dict[int, float]:
    """The policy prefers a, then b; the safe token c is the least probable child (top-p 0.8:
    before-masses 0, .4, .7 are < .8, EOS's .95 is not)."""
    return {ids["a"]: 0.4, ids["b"]: 0.3, ids["c"]: 0.25, EOS: 0.05}


def cfg(budget: int, max_new: int = 5, top_p: float = 0.8, **options: object) -> SearchConfig:
    """No stop token before max_new (min_new_tokens = max_new_tokens)."""
    return SearchConfig(
        budget=budget,
        max_new_tokens=max_new,
        min_new_tokens=max_new,
        top_p=top_p,
        options=tuple(options.items()),
    )


@pytest.mark.parametrize("budget", [1, 2, 4])
def test_finds_the_safest_continuation(models, ids, table, prompt, budget) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search("saffron", world, prompt, cfg(budget))
    assert result.generated == (ids["c"],) * 5  # neither the most probable nor the first child
    assert result.reward == pytest.approx(1.0)
    assert result.text == "ccccc"
    assert result.extra["reward_source"] == "mrm"


def test_one_mrm_call_per_unfinished_beam_per_step(models, ids, table, prompt) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search("saffron", world, prompt, cfg(2))
    mrm = world.mrm
    assert isinstance(mrm, ToyMRM)
    # 3 children per beam, width 2, no stop token possible: 1 beam, then 2 beams per step.
    assert result.extra["beams_per_step"] == [1, 2, 2, 2, 2]
    assert [len(b) for b in mrm.batches] == [1, 2, 2, 2, 2]  # one batched call per step
    assert mrm.calls == 9
    assert result.reward_calls == {"guard": 0, "mrm": 9}  # the guard is never called
    assert result.compute.per_model["mrm"].sequences == 9
    assert result.compute.per_model["guard"].flops == 0


def test_finished_beams_are_never_rescored(models, ids, prompt) -> None:
    """With stop tokens allowed, beams finish early; each MRM call holds only live beams."""
    table = {ids["a"]: 0.3, ids["b"]: 0.3, EOS: 0.4}
    world = models.world(frac_reward(frozenset({ids["a"], EOS})), table=table)
    config = SearchConfig(budget=3, max_new_tokens=6, min_new_tokens=1, top_p=1.0)
    result = run_search("saffron", world, prompt, config)
    mrm = world.mrm
    assert isinstance(mrm, ToyMRM)
    scored = [s for batch in mrm.batches for s in batch]
    assert not any(is_finished(s, world.policy, config) for s in scored)
    assert [len(b) for b in mrm.batches] == result.extra["beams_per_step"]
    assert mrm.calls == sum(result.extra["beams_per_step"])
    assert EOS not in {s.generated[0] for s in scored if s.generated}  # forbidden before min=1


def deceptive(a: int, b: int) -> object:
    """a looks best after one token, but every continuation of b beats every one of a."""

    def reward(gen: tuple[int, ...]) -> float:
        if len(gen) <= 1:
            return {a: 0.5, b: 0.4}.get(gen[0], -1.0) if gen else 0.0
        return (1.0 if gen[0] == b else 0.6) - 0.01 * sum(t != gen[0] for t in gen)

    return reward


def test_answer_is_best_by_reward_not_first_parent(models, ids, prompt) -> None:
    """The best final beam descends from the second beam of step 1 and from the least probable
    token: list order (first parent, first child) would return a different sequence."""
    a, b = ids["a"], ids["b"]
    world = models.world(deceptive(a, b), table={a: 0.6, b: 0.4})  # type: ignore[arg-type]
    result = run_search("saffron", world, prompt, cfg(2, max_new=3, top_p=1.0))
    assert result.generated == (b, b, b)
    assert result.reward == pytest.approx(1.0)


def test_truncated_beam_with_higher_reward_beats_eos_ended(models, ids, prompt) -> None:
    a = ids["a"]
    world = models.world(lambda g: -1.0 if EOS in g else 1.0, table={a: 0.5, EOS: 0.5})
    config = SearchConfig(budget=2, max_new_tokens=4, min_new_tokens=0, top_p=1.0)
    result = run_search("saffron", world, prompt, config)
    assert result.generated == (a,) * 4
    assert result.reward == pytest.approx(1.0)
    assert not result.finished  # reached max_new_tokens, did not end by EOS


def test_a_beam_can_end_by_merit(models, ids, prompt) -> None:
    """EOS is an ordinary child: when ending is safest, the answer ends (paper's flaw fixed)."""
    a = ids["a"]
    world = models.world(lambda g: 2.0 if g[-1:] == (EOS,) else 0.0, table={a: 0.9, EOS: 0.1})
    config = SearchConfig(budget=2, max_new_tokens=6, min_new_tokens=2, top_p=1.0)
    result = run_search("saffron", world, prompt, config)
    assert result.generated == (a, a, EOS)  # EOS is forbidden for the first two tokens
    assert result.finished
    assert result.text == "aa"


def test_conservative_mask_excludes_unseen_tokens(models, ids, table, prompt) -> None:
    reward = frac_reward(frozenset({ids["c"]}))
    on = models.world(reward, table=table, unseen=frozenset({ids["c"]}))
    result = run_search("saffron", on, prompt, cfg(2))
    assert ids["c"] not in result.generated
    assert result.extra["conservative"] is True
    off = models.world(reward, table=table, unseen=frozenset({ids["c"]}))
    result = run_search("saffron", off, prompt, cfg(2, conservative=False))
    assert result.generated == (ids["c"],) * 5


def test_all_unseen_falls_back_to_the_policy(models, ids, table, prompt) -> None:
    """Every token unseen: no child has an estimate; beams follow the policy's top token."""
    world = models.world(
        frac_reward(frozenset({ids["c"]})), table=table, unseen=frozenset(range(259))
    )
    result = run_search("saffron", world, prompt, cfg(3))
    assert result.generated == (ids["a"],) * 5
    assert result.reward is None  # the search never saw a reward
    assert result.extra["fallback_steps"] == result.extra["steps"] == 5


def test_mrm_for_another_tokenizer(models, ids, table, prompt) -> None:
    world = models.world(frac_reward(frozenset()), table=table, mrm_vocab=300)
    with pytest.raises(SaffronError) as err:
        run_search("saffron", world, prompt, cfg(2))
    assert str(err.value) == (
        "MRM 'toy-mrm' scores a vocabulary of 300 tokens, policy 'tiny-random-llama' has 259; "
        "an MRM only works with its own policy's tokenizer"
    )


def test_needs_an_mrm(models, prompt: TokenSequence) -> None:
    world = models.world(frac_reward(frozenset()), mrm=False)
    expected = "method 'saffron' needs a multifurcation reward model (MRM)"
    with pytest.raises(SaffronError, match=r"^method 'saffron' needs a multifurcation"):
        run_search("saffron", world, prompt, cfg(2))
    with pytest.raises(SaffronError) as err:  # also when called directly
        saffron(World(world.policy), prompt, cfg(2))
    assert str(err.value) == expected


def test_bad_conservative_option(models, table, prompt) -> None:
    world = models.world(frac_reward(frozenset()), table=table)
    with pytest.raises(SaffronError) as err:
        run_search("saffron", world, prompt, cfg(2, conservative="yes"))
    assert str(err.value) == "option 'conservative' must be true or false, got 'yes'"


def test_trie_sharing_changes_compute_not_answers(models, ids, table, prompt) -> None:
    """Ablation: the same search on uncached backends gives the same answer at more compute."""
    reward = frac_reward(frozenset({ids["c"]}))
    cached = models.world(reward, table=table)
    plain = models.world(reward, table=table)
    base = make_policy(models.policy, cache=False)
    plain.policy = TablePolicy(base.backend, base.chat, table)
    assert isinstance(plain.mrm, ToyMRM)
    plain.mrm.backend = PlainBackend(models.mrm)
    r1 = run_search("saffron", cached, prompt, cfg(3))
    r2 = run_search("saffron", plain, prompt, cfg(3))
    assert r1.generated == r2.generated
    assert r1.reward == r2.reward
    for role in ("policy", "mrm"):
        c1, c2 = r1.compute.per_model[role], r2.compute.per_model[role]
        assert c1.tokens_computed < c2.tokens_computed
        assert c1.flops < c2.flops
        assert c1.tokens_reused > 0
        assert c2.tokens_reused == 0
