"""What every method shares: the registry, result contents, determinism under a seed, compute
that grows with the budget, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
from search_toys import frac_reward

from saffron.errors import SaffronError
from saffron.search import METHODS, SearchConfig, get_method, run_search
from saffron.search.beam import beam
from saffron.search.best_of_n import best_of_n
from saffron.search.mcts import mcts
from saffron.search.rejection import rejection

GUIDED = ["saffron", "best-of-n", "rejection", "beam", "mcts"]
EVEN = frac_reward(frozenset(range(0, 259, 2)))  # a reward the real tiny policy can move


def small(budget: int = 2, seed: int = 0, **options: object) -> SearchConfig:
    return SearchConfig(
        budget=budget,
        max_new_tokens=4,
        min_new_tokens=2,
        top_p=0.9,
        seed=seed,
        options=tuple(options.items()),
    )


def test_every_method_is_registered() -> None:
    assert set(METHODS) >= {"greedy", "sample", *GUIDED}
    assert get_method("saffron").needs_mrm
    assert not get_method("saffron").needs_guard
    assert all(get_method(m).needs_guard for m in GUIDED if m != "saffron")


@pytest.mark.parametrize("method", GUIDED)
def test_result_carries_answer_reward_compute_and_calls(models, prompt, method) -> None:
    world = models.world(EVEN)
    result = run_search(method, world, prompt, small())
    assert result.method == method
    assert 2 <= len(result.generated) <= 4
    assert result.sequence.prefill == prompt.prefill  # the prefill stays in the policy's context
    assert result.text == world.policy.chat.decode(result.generated)
    assert result.reward is not None
    assert set(result.compute.per_model) == {"policy", "guard", "mrm"}
    assert result.compute.per_model["policy"].tokens_computed > 0
    assert result.compute.tflop > 0
    assert result.compute.wall_s > 0
    reward_model = "mrm" if method == "saffron" else "guard"
    assert result.reward_calls[reward_model] > 0
    assert sum(result.reward_calls.values()) == result.reward_calls[reward_model]
    assert result.extra["reward_source"].startswith(reward_model)
    json.dumps(result.to_dict())


@pytest.mark.parametrize("method", GUIDED)
def test_deterministic_under_seed(models, prompt, method) -> None:
    runs = [run_search(method, models.world(EVEN), prompt, small(seed=7)) for _ in range(2)]
    assert runs[0].generated == runs[1].generated
    assert runs[0].reward == runs[1].reward
    assert runs[0].reward_calls == runs[1].reward_calls
    for role in ("policy", "guard", "mrm"):
        a, b = runs[0].compute.per_model[role], runs[1].compute.per_model[role]
        assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize("method", GUIDED)
def test_compute_grows_with_budget(models, ids, prompt, method) -> None:
    table = {ids["a"]: 0.4, ids["b"]: 0.3, ids["c"]: 0.3}
    never_safe = frac_reward(frozenset())  # rejection then spends its whole budget
    flops, tokens = [], []
    low = get_method(method).min_budget
    for budget in (low, 2 * low, 4 * low):
        world = models.world(never_safe, table=table)
        config = SearchConfig(budget=budget, max_new_tokens=4, min_new_tokens=4, top_p=1.0)
        c = run_search(method, world, prompt, config).compute
        flops.append(c.flops)
        tokens.append(sum(m.tokens_computed for m in c.per_model.values()))
    assert flops[0] < flops[1] < flops[2]
    assert tokens[0] < tokens[1] < tokens[2]


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": 0}, "budget must be a positive integer, got 0"),
        ({"top_p": 0.0}, "top_p must be in (0, 1], got 0.0"),
        ({"top_p": 1.5}, "top_p must be in (0, 1], got 1.5"),
        (
            {"max_new_tokens": 8, "min_new_tokens": 16},
            "min_new_tokens (16) must be between 0 and max_new_tokens (8)",
        ),
    ],
)
def test_bad_config(kwargs, message) -> None:
    with pytest.raises(SaffronError) as err:
        SearchConfig(**kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("fn", "name"),
    [(best_of_n, "best-of-n"), (rejection, "rejection"), (beam, "beam"), (mcts, "mcts")],
)
def test_guard_methods_need_a_guard(models, prompt, fn, name) -> None:
    world = models.world(EVEN, guard=False)
    expected = f"method {name!r} needs a guard model"
    for call in (
        lambda: run_search(name, world, prompt, small()),
        lambda: fn(world, prompt, small()),
    ):
        with pytest.raises(SaffronError) as err:
            call()
        assert str(err.value) == expected


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("beam", {"children": 0}, "option 'children' must be an integer ≥ 1, got 0"),
        (
            "beam",
            {"rebase_temperature": -1.0},
            "option 'rebase_temperature' must be a finite number > 0, got -1.0",
        ),
        ("mcts", {"lookahead": -1}, "option 'lookahead' must be an integer ≥ 0, got -1"),
        ("mcts", {"chunk": 1.5}, "option 'chunk' must be an integer ≥ 1, got 1.5"),
        ("mcts", {"exploration": 0}, "option 'exploration' must be a finite number > 0, got 0"),
        (
            "rejection",
            {"threshold": "safe"},
            "option 'threshold' must be a finite number, got 'safe'",
        ),
    ],
)
def test_bad_options(models, prompt, method, options, message) -> None:
    world = models.world(EVEN)
    with pytest.raises(SaffronError) as err:
        run_search(method, world, prompt, small(**options))
    assert str(err.value) == message


@pytest.mark.parametrize("method", ["greedy", "sample"])
def test_no_defence_respects_min_new_tokens(models, prompt, method) -> None:
    """Regression: forbidding stop tokens used to write into an inference-mode tensor."""
    config = SearchConfig(max_new_tokens=6, min_new_tokens=3)
    world = models.world(EVEN, guard=False, mrm=False)
    result = run_search(method, world, prompt, config)
    assert 3 <= len(result.generated) <= 6
    assert not set(result.generated[:3]) & world.policy.chat.eos_ids
