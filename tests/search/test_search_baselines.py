"""Baselines: best-of-n, rejection, Rebase-style beam search, DeAL-style lookahead search.
Known optima on a toy policy, and exact guard-call accounting."""

from __future__ import annotations

import pytest
from search_toys import EOS, ToyGuard, frac_reward

from saffron.search import SearchConfig, run_search
from saffron.search.beam import allocate


@pytest.fixture
def table(ids: dict[str, int]) -> dict[int, float]:
    """a is the policy's favourite; the safe token c is reachable but rarer."""
    return {ids["a"]: 0.4, ids["b"]: 0.3, ids["c"]: 0.3}


def cfg(budget: int, max_new: int = 4, **options: object) -> SearchConfig:
    """No stop token before max_new; top-p 1 so every table token can be drawn."""
    return SearchConfig(
        budget=budget,
        max_new_tokens=max_new,
        min_new_tokens=max_new,
        top_p=1.0,
        seed=3,
        options=tuple(options.items()),
    )


def guard_of(world) -> ToyGuard:
    assert isinstance(world.guard, ToyGuard)
    return world.guard


# --- best-of-n ------------------------------------------------------------------------------


def test_best_of_n_makes_exactly_n_outcome_calls(models, ids, table, prompt) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table, mrm=False)
    result = run_search("best-of-n", world, prompt, cfg(12))
    guard = guard_of(world)
    assert guard.calls == 12
    assert [len(b) for b in guard.batches] == [12]  # one batched outcome-reward call
    assert all(len(s.generated) == 4 for s in guard.batches[0])  # complete answers only
    assert result.reward_calls == {"guard": 12}
    assert result.reward == max(result.extra["rewards"])
    assert result.extra["rewards"][result.extra["chosen"]] == result.reward


def test_best_of_n_finds_the_optimum_with_enough_samples(models, ids, table, prompt) -> None:
    """P(cccc) = 0.0081 per sample: 2 samples miss it, 1024 find it (for this seed)."""
    reward = frac_reward(frozenset({ids["c"]}))
    few = run_search("best-of-n", models.world(reward, table=table), prompt, cfg(2))
    many = run_search("best-of-n", models.world(reward, table=table), prompt, cfg(1024))
    assert few.reward is not None and few.reward < 1.0
    assert many.generated == (ids["c"],) * 4
    assert many.reward == pytest.approx(1.0)


def test_best_of_n_shares_the_prompt_in_the_trie(models, table, prompt) -> None:
    world = models.world(frac_reward(frozenset()), table=table)
    result = run_search("best-of-n", world, prompt, cfg(8))
    pol = result.compute.per_model["policy"]
    ctx = len(prompt)
    assert pol.tokens_computed <= ctx + 8 * 3  # the prompt once, then ≤ 3 new tokens a sample
    assert pol.tokens_reused >= 7 * ctx


def test_best_of_one_is_sample(models, prompt) -> None:
    config = SearchConfig(budget=1, max_new_tokens=6, min_new_tokens=2, top_p=0.9, seed=5)
    reward = frac_reward(frozenset())
    one = run_search("best-of-n", models.world(reward), prompt, config)
    plain = run_search("sample", models.world(reward), prompt, config)
    assert one.generated == plain.generated


# --- rejection ------------------------------------------------------------------------------


def test_rejection_stops_at_the_first_safe_sample(models, ids, table, prompt) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search("rejection", world, prompt, cfg(50, max_new=2))
    n = result.extra["samples"]
    assert result.extra["accepted"]
    assert result.reward is not None and result.reward >= 0
    assert all(r < 0 for r in result.extra["rewards"][:-1])
    assert guard_of(world).calls == n == result.reward_calls["guard"]


def test_rejection_spends_the_budget_then_keeps_the_best(models, ids, table, prompt) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search("rejection", world, prompt, cfg(6, threshold=5.0))
    assert result.extra["samples"] == 6 == guard_of(world).calls
    assert not result.extra["accepted"]
    assert result.reward == max(result.extra["rewards"])


def test_rejection_first_sample_is_sample(models, prompt) -> None:
    config = SearchConfig(budget=3, max_new_tokens=6, min_new_tokens=2, top_p=0.9, seed=5)
    safe_always = run_search("rejection", models.world(lambda g: 1.0), prompt, config)
    plain = run_search("sample", models.world(lambda g: 1.0), prompt, config)
    assert safe_always.extra["samples"] == 1
    assert safe_always.generated == plain.generated


# --- beam (Rebase) --------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "k"), [(1, 2), (3, 2), (2, 4)])
def test_beam_makes_w_times_k_process_calls_per_step(models, ids, table, prompt, width, k) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search("beam", world, prompt, cfg(width, children=k))
    guard = guard_of(world)
    assert [len(b) for b in guard.batches] == [width * k] * 4  # one batched call per step
    assert result.extra["children_per_step"] == [width * k] * 4
    assert guard.calls == 4 * width * k == result.reward_calls["guard"]
    # process rewards: step t scores partial answers of t tokens
    assert [{len(s.generated) for s in b} for b in guard.batches] == [{1}, {2}, {3}, {4}]


def test_beam_completed_answers_shrink_the_width(models, ids, prompt) -> None:
    """Rebase: each completed answer removes one unit of width, so k·(w − done) per step."""
    a = ids["a"]
    world = models.world(lambda g: 1.0 if g[-1:] == (EOS,) else 0.0, table={a: 0.5, EOS: 0.5})
    config = SearchConfig(budget=3, max_new_tokens=5, min_new_tokens=0, top_p=1.0, seed=1)
    result = run_search("beam", world, prompt, config)
    per_step = result.extra["children_per_step"]
    assert per_step[0] == 3 * 4
    assert all(n % 4 == 0 for n in per_step)
    assert per_step == sorted(per_step, reverse=True)
    assert per_step[-1] < per_step[0]
    assert guard_of(world).calls == sum(per_step)
    assert result.finished and result.reward == pytest.approx(1.0)


def test_beam_finds_the_optimum(models, ids, table, prompt) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search("beam", world, prompt, cfg(4, rebase_temperature=0.1))
    assert result.generated == (ids["c"],) * 4
    assert result.reward == pytest.approx(1.0)
    assert result.extra["reward_source"] == "guard (process)"


def test_rebase_allocation() -> None:
    assert allocate([0.0, 0.0], 8, 1.0) == [4, 4]
    assert sum(allocate([1.0, 0.3, -2.0], 7, 0.5)) == 7
    assert allocate([5.0, -5.0], 4, 0.1) == [4, 0]  # a poor node is pruned
    assert allocate([float("-inf")], 6, 1.0) == [6]  # the prompt gets the whole budget
    assert allocate([1.0, 1.0, 1.0], 4, 1.0) == [2, 1, 1]  # ties: the earlier node


# --- mcts (DeAL) ----------------------------------------------------------------------------


def test_mcts_one_guard_call_per_simulation(models, ids, table, prompt) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search("mcts", world, prompt, cfg(5, lookahead=2, children=3))
    guard = guard_of(world)
    assert result.extra["decisions"] == 4
    assert guard.calls == 5 * 4 == result.reward_calls["guard"]
    # each decision: every candidate once (batched), then one simulation at a time
    assert [len(b) for b in guard.batches] == [3, 1, 1] * 4
    depths = [len(s.generated) for b in guard.batches for s in b]
    assert max(depths) <= 4  # rollouts never pass max_new_tokens


def test_mcts_finds_the_optimum_with_exact_lookahead(models, ids, table, prompt) -> None:
    """lookahead 0: the guard scores each candidate itself, so the safest token always wins."""
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search("mcts", world, prompt, cfg(3, lookahead=0, children=3))
    assert result.generated == (ids["c"],) * 4
    assert result.reward == pytest.approx(1.0)


def test_mcts_commits_chunks(models, ids, table, prompt) -> None:
    world = models.world(frac_reward(frozenset({ids["c"]})), table=table)
    result = run_search("mcts", world, prompt, cfg(2, max_new=6, lookahead=3, chunk=3))
    assert result.extra["decisions"] == 2
    assert len(result.generated) == 6
    assert guard_of(world).calls == 2 * 2
