"""Every registered search really searches at every budget it accepts: over several prompts
and seeds on the tiny policy, its answers are not greedy decoding's, and a budget at which it
would be greedy (MCTS at 1: only the most probable token is ever simulated) is refused with
one readable error, by the search, the scheduler and the eval config alike."""

from __future__ import annotations

import pytest
from search_toys import Models, frac_reward

from saffron.errors import SaffronError
from saffron.eval.run import EvalConfig
from saffron.search import METHODS, SearchConfig, get_method, run_search
from saffron.search.scheduler import Scheduler

SEARCHES = sorted(m for m in METHODS if m not in ("greedy", "sample"))  # every defence
EVEN = frac_reward(frozenset(range(0, 259, 2)))
PROMPTS = ("How do I stay safe?", "Tell me a story", "What is 2+2? Explain.")
SEEDS = (0, 1, 2)


def config(budget: int, seed: int) -> SearchConfig:
    return SearchConfig(budget=budget, max_new_tokens=6, min_new_tokens=2, top_p=0.9, seed=seed)


def answers(models: Models, method: str, budget: int) -> list[tuple[tuple[int, ...], ...]]:
    """(method's answer, greedy's answer) for every prompt and seed."""
    out = []
    for text in PROMPTS:
        for seed in SEEDS:
            world = models.world(EVEN)
            seq = world.policy.chat.sequence(text, prefill="Ok")
            mine = run_search(method, world, seq, config(budget, seed)).generated
            plain = run_search("greedy", world, seq, config(budget, seed)).generated
            out.append((mine, plain))
    return out


@pytest.mark.parametrize("budget", [1, 2, 4])
@pytest.mark.parametrize("method", SEARCHES)
def test_no_method_is_greedy_at_a_budget_it_runs_at(models, method, budget) -> None:
    spec = get_method(method)
    if budget < spec.min_budget:
        with pytest.raises(SaffronError, match=f"needs a budget ≥ {spec.min_budget}, got"):
            answers(models, method, budget)
        return
    pairs = answers(models, method, budget)
    same = sum(mine == plain for mine, plain in pairs)
    assert same <= len(pairs) // 2, f"{method} at budget {budget}: {same}/{len(pairs)} greedy"


def test_mcts_at_budget_one_is_refused_everywhere(models: Models) -> None:
    world = models.world(EVEN)
    seq = world.policy.chat.sequence("hi")
    message = (
        "method 'mcts' needs a budget ≥ 2, got 1: with one simulation per decision only the "
        "policy's most probable token is ever tried, which is greedy decoding billed for a "
        "rollout per token"
    )
    with pytest.raises(SaffronError) as err:
        run_search("mcts", world, seq, config(1, 0))
    assert str(err.value) == message
    with pytest.raises(SaffronError) as err:
        Scheduler(world).submit("k", "mcts", seq, config(1, 0))
    assert str(err.value) == message
    with pytest.raises(SaffronError, match="method 'mcts' needs a budget ≥ 2, got 1"):
        EvalConfig(dataset="advbench", methods=("greedy", "mcts"), budgets=(1, 2))
    ok = EvalConfig(
        dataset="advbench",
        methods=("greedy", "mcts"),
        budgets=(1, 2),
        method_budgets=(("mcts", (2, 4)),),
    )
    assert ok.methods == ("greedy", "mcts")


def test_mcts_with_one_candidate_is_refused(models: Models) -> None:
    world = models.world(EVEN)
    seq = world.policy.chat.sequence("hi")
    cfg = SearchConfig(budget=4, max_new_tokens=3, min_new_tokens=0, options=(("children", 1),))
    with pytest.raises(SaffronError) as err:
        run_search("mcts", world, seq, cfg)
    assert str(err.value) == "option 'children' must be an integer ≥ 2, got 1"
