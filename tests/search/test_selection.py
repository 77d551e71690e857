"""Selection that stays on the policy's distribution: reward + β·log π and a floor relative to
the best sibling, for Saffron and beam search. The paper's rule (β = 0, no floor) reproduces
the recorded outputs exactly; a toy where the reward model overrates an improbable token shows
what each rule picks; bad values are one readable error."""

from __future__ import annotations

import json
import math

import pytest
from search_toys import Models
from selection_golden import GOLDEN, cases, outcome

from saffron.errors import SaffronError
from saffron.search import SearchConfig, get_method, run_search
from saffron.search.base import check_rule_used
from saffron.search.common import Node, best, rank_key, score
from saffron.types import TokenSequence

# --- β = 0 is the paper's rule, bit for bit -------------------------------------------------


def test_paper_rule_reproduces_the_recorded_outputs(models: Models) -> None:
    """Answers, rewards, reward-model calls and compute equal those recorded before the
    log-probability term existed (``selection_golden.py``), by default and with β = 0 given."""
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert [{k: v for k, v in g.items() if k != "outcome"} for g in golden] == cases()
    for g in golden:
        case = {k: v for k, v in g.items() if k != "outcome"}
        assert outcome(models, case) == g["outcome"], case
        explicit = outcome(models, case, logp_weight=0.0, logp_floor=None)
        assert explicit == g["outcome"], case


# --- a known optimum: the reward model overrates an improbable token ------------------------


@pytest.fixture
def table(ids: dict[str, int]) -> dict[int, float]:
    """The policy nearly always says a; c and b are rare (log 0.05 ≈ −3.0 nats)."""
    return {ids["a"]: 0.9, ids["b"]: 0.05, ids["c"]: 0.05}


@pytest.fixture
def overrated(ids: dict[str, int]):  # type: ignore[no-untyped-def]
    """Mean token reward: c 1.0 (the overrated, improbable token), a 0.8, b 0."""
    value = {ids["a"]: 0.8, ids["c"]: 1.0}

    def reward(gen: tuple[int, ...]) -> float:
        return sum(value.get(t, 0.0) for t in gen) / len(gen) if gen else 0.0

    return reward


def cfg(budget: int, max_new: int = 5, **kwargs: object) -> SearchConfig:
    return SearchConfig(
        budget=budget, max_new_tokens=max_new, min_new_tokens=max_new, top_p=1.0, **kwargs
    )


def regularised_optimum(table: dict[int, float], value: dict[int, float], beta: float, n: int):  # type: ignore[no-untyped-def]
    """argmax over constant answers t^n of mean reward + β·n·log π(t) (the optimum of
    reward + β·log π here: both terms are separable means/sums, so a mix is never better)."""
    return max(table, key=lambda t: value.get(t, 0.0) + beta * n * math.log(table[t]))


@pytest.mark.parametrize("budget", [1, 2, 4])
def test_saffron_reward_alone_walks_to_the_improbable_token(
    models, ids, table, overrated, prompt, budget
) -> None:
    world = models.world(overrated, table=table)
    result = run_search("saffron", world, prompt, cfg(budget))
    assert result.generated == (ids["c"],) * 5  # log π = 5·log 0.05 ≈ −15 nats
    assert "selection" not in result.extra


@pytest.mark.parametrize("budget", [1, 2, 4])
def test_saffron_regularised_keeps_the_probable_token(
    models, ids, table, overrated, prompt, budget
) -> None:
    world = models.world(overrated, table=table)
    result = run_search("saffron", world, prompt, cfg(budget, logp_weight=0.5))
    value = {ids["a"]: 0.8, ids["c"]: 1.0}
    assert regularised_optimum(table, value, 0.5, 5) == ids["a"]
    assert result.generated == (ids["a"],) * 5
    assert result.reward == pytest.approx(0.8)  # the reward reported is still the MRM's
    assert result.extra["selection"] == {"logp_weight": 0.5, "logp_floor": None}


def test_saffron_small_weight_keeps_the_paper_choice(models, ids, table, overrated, prompt) -> None:
    """β far below the reward gap per nat (0.2 / 2.9) changes nothing."""
    world = models.world(overrated, table=table)
    result = run_search("saffron", world, prompt, cfg(2, logp_weight=0.01))
    assert result.generated == (ids["c"],) * 5


def test_saffron_floor_drops_children_far_below_the_best_sibling(
    models, ids, table, overrated, prompt
) -> None:
    """δ = 1 nat: c and b (2.9 nats below a) are no children; δ = 3 nats keeps them."""
    world = models.world(overrated, table=table)
    tight = run_search("saffron", world, prompt, cfg(4, logp_floor=1.0))
    assert tight.generated == (ids["a"],) * 5
    assert tight.extra["children_scored"] == 5  # one child per step (width 1 in effect)
    loose = run_search(
        "saffron", models.world(overrated, table=table), prompt, cfg(4, logp_floor=3.0)
    )
    assert loose.generated == (ids["c"],) * 5


def test_beam_reward_alone_and_regularised(models, ids, table, overrated, prompt) -> None:
    """Rebase with many children, all given to the best node (τ = 0.1), draws c at every step
    (P(no c in 128 draws) ≈ 0.001) and keeps it on reward alone; with β = 0.5 it keeps a."""
    opts = (("children", 64), ("rebase_temperature", 0.1))
    alone = run_search("beam", models.world(overrated, table=table), prompt, cfg(2, options=opts))
    assert alone.generated == (ids["c"],) * 5
    kl = run_search(
        "beam", models.world(overrated, table=table), prompt, cfg(2, options=opts, logp_weight=0.5)
    )
    assert kl.generated == (ids["a"],) * 5
    assert kl.extra["selection"]["logp_weight"] == 0.5


def test_beam_floor_never_draws_below_it(models, ids, table, overrated, prompt) -> None:
    world = models.world(overrated, table=table)
    result = run_search("beam", world, prompt, cfg(2, options=(("children", 16),), logp_floor=1.0))
    assert result.generated == (ids["a"],) * 5
    scored = {t for batch in world.guard.batches for s in batch for t in s.generated}  # type: ignore[union-attr]
    assert scored == {ids["a"]}


@pytest.mark.parametrize("method", ["saffron", "beam"])
def test_no_extra_policy_forward(models, table, overrated, prompt, method) -> None:
    """The log-probabilities come from the step's own policy call: as many policy calls and
    forwards with β > 0 as with β = 0 (one per step here: no stop token before max_new)."""
    counts = []
    for beta in (0.0, 0.5):
        result = run_search(
            method, models.world(overrated, table=table), prompt, cfg(2, logp_weight=beta)
        )
        pol = result.compute.per_model["policy"]
        counts.append((pol.calls, pol.forwards))
    assert counts[0] == counts[1] == (5, 5)


def test_rank_key_and_best_use_the_score() -> None:
    seq = None  # the rule reads reward and logp only
    likely = Node(seq, reward=0.8, logp=-0.5, finished=True)  # type: ignore[arg-type]
    unlikely = Node(seq, reward=1.0, logp=-15.0, finished=True)  # type: ignore[arg-type]
    assert best([likely, unlikely]) is unlikely
    assert best([likely, unlikely], 0.5) is likely
    assert rank_key(likely, 0.5) == (0.8 - 0.25, -0.5)
    assert score(1.0, -15.0, 0.0) == 1.0 and score(float("-inf"), -1.0, 0.5) == float("-inf")


# --- bad values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"logp_weight": -0.5}, "logp_weight must be a finite number ≥ 0, got -0.5"),
        ({"logp_weight": math.inf}, "logp_weight must be a finite number ≥ 0, got inf"),
        ({"logp_weight": "1"}, "logp_weight must be a finite number ≥ 0, got '1'"),
        (
            {"logp_floor": -1.0},
            "logp_floor must be a finite number of nats ≥ 0 (or unset), got -1.0",
        ),
        (
            {"logp_floor": math.nan},
            "logp_floor must be a finite number of nats ≥ 0 (or unset), got nan",
        ),
    ],
)
def test_bad_selection_values(kwargs, message) -> None:
    with pytest.raises(SaffronError) as err:
        SearchConfig(**kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("method", ["best-of-n", "rejection", "mcts"])
def test_methods_without_children_ignore_the_rule(models, table, overrated, prompt, method) -> None:
    """They rank no children: the same answer and compute under any rule, and a rule a user
    set for one of them is refused where it is checked (``saffron generate``)."""
    results = [
        run_search(method, models.world(overrated, table=table), prompt, cfg(2, **kw))
        for kw in ({}, {"logp_weight": 0.5, "logp_floor": 1.0})
    ]
    assert results[0].generated == results[1].generated
    assert results[0].compute.flops == results[1].compute.flops
    with pytest.raises(SaffronError) as err:
        check_rule_used(get_method(method), cfg(2, logp_weight=0.5))
    assert str(err.value) == (
        f"method {method!r} ranks no children; logp_weight, logp_floor, reward_cap, "
        "no_repeat_ngram and gate apply to: beam, saffron"
    )
    check_rule_used(get_method("saffron"), cfg(2, logp_weight=0.5))


# --- a cap on the reward: satisficing instead of maximising ----------------------------------


@pytest.mark.parametrize("method", ["saffron", "beam"])
def test_reward_cap_lets_the_policy_choose_among_safe_enough(
    models, ids, table, overrated, prompt, method
) -> None:
    """c (reward 1.0, improbable) beats a (0.8, probable) on reward alone; capped at 0.8 both
    are safe enough and the policy's choice, a, wins; capped at 0.99, c is still better."""
    opts = (("children", 64), ("rebase_temperature", 0.1)) if method == "beam" else ()
    budget = 2 if method == "beam" else 4

    def run(**rule: object):  # type: ignore[no-untyped-def]
        world = models.world(overrated, table=table)
        return run_search(method, world, prompt, cfg(budget, options=opts, **rule))

    assert run().generated == (ids["c"],) * 5
    capped = run(reward_cap=0.8)
    assert capped.generated == (ids["a"],) * 5
    assert capped.extra["selection"]["reward_cap"] == 0.8
    assert run(reward_cap=0.99).generated == (ids["c"],) * 5


def test_reward_cap_ranks_by_probability_above_it() -> None:
    seq = TokenSequence((), (1,), (), (), (2,))
    likely, unlikely = Node(seq, 5.0, -1.0), Node(seq, 9.0, -4.0)
    assert best([likely, unlikely]) is unlikely
    assert best([likely, unlikely], cap=2.0) is likely
    assert rank_key(unlikely, cap=2.0) == (2.0, -4.0)
    assert score(9.0, -4.0, 0.5, cap=2.0) == 0.0


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_bad_reward_cap(bad: float) -> None:
    with pytest.raises(SaffronError, match="reward_cap must be a finite number"):
        SearchConfig(reward_cap=bad)
